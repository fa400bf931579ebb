package authcert

import "time"

// Lifetimes of what Issue and NewCA make (TestLifetimes pins each).
const (
	CAValidity      = 10 * 365 * 24 * time.Hour
	ServingValidity = 90 * 24 * time.Hour
	// Overlap is how long a new CA is in the bundle before it signs.
	Overlap = 30 * 24 * time.Hour
	// backdate covers clocks that run a little behind the issuer's.
	backdate = 5 * time.Minute
)
