// Package tenancy decides which namespace owns an agent ID. An agent ID
// belongs to the namespace of the oldest credential naming it; a credential
// in any other namespace that names it conflicts and gets no usable key. The
// controller and the admission webhook share this rule.
package tenancy

import (
	"sort"
	"strings"
	"time"
)

// Claim is one credential's claim on agent IDs.
type Claim struct {
	Namespace string
	Name      string
	Created   time.Time
	// AgentIDs are lower-case UUIDs.
	AgentIDs []string
	// Deleting claims (deletionTimestamp set) no longer hold agent IDs.
	Deleting bool
	// Issued claims hold a key already. Creation times have one-second
	// resolution; within the same second a credential that already has a
	// key keeps it rather than losing it to a newcomer.
	Issued bool
}

// Conflict is an agent ID that another namespace owns.
type Conflict struct {
	AgentID string
	// Owner is namespace/name of the oldest credential naming AgentID.
	Owner string
}

// older orders claims by creation time, then by namespace and name so that
// credentials created in the same second still have exactly one owner.
func older(a, b Claim) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	if a.Issued != b.Issued {
		return a.Issued
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// Conflicts returns the agent IDs of claim that are owned by a credential in
// another namespace, given every claim that names any of them (claim itself
// may be among others). The result is sorted by agent ID.
func Conflicts(claim Claim, others []Claim) []Conflict {
	var out []Conflict
	for _, id := range claim.AgentIDs {
		id = strings.ToLower(id)
		owner := claim
		for _, o := range others {
			if o.Deleting || !names(o, id) {
				continue
			}
			if older(o, owner) {
				owner = o
			}
		}
		if owner.Namespace != claim.Namespace {
			out = append(out, Conflict{AgentID: id, Owner: owner.Namespace + "/" + owner.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AgentID < out[j].AgentID })
	return out
}

func names(c Claim, id string) bool {
	for _, a := range c.AgentIDs {
		if strings.EqualFold(a, id) {
			return true
		}
	}
	return false
}
