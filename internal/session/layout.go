package session

import (
	"crypto/sha256"

	"github.com/agrenting/agentcred/internal/credential"
)

// The token layout. (make mutate leaves layout.go out: constant
// expressions are never "covered" by Go's coverage, and a wrong one fails
// every Mint/Parse test at once.)
const (
	version    = 1
	fixedLen   = 1 + 4 + 8 + 8 + 16 + 6 + 2
	macLen     = sha256.Size
	maxCredLen = 63 + 1 + 253 // namespace/name
	maxRawLen  = fixedLen + maxCredLen + macLen
	prefixLen  = len(credential.SessionPrefix)
	// MaxTokenLen bounds what Parse will decode.
	MaxTokenLen = prefixLen + (maxRawLen*8+5)/6
)
