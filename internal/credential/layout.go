package credential

// The key layout. (make mutate leaves layout.go out: constant expressions
// are never "covered" by Go's coverage, and a wrong one fails every
// Generate/Parse test at once.)
const (
	prefixLen   = 3
	randomLen   = 43 // 43 base62 digits carry 256.03 bits.
	checksumLen = 6  // 62^6 > 2^32, so any CRC32 fits.
	// sandboxPrefixLen is the length of the prefixes `ak_test_` and `ap_test_`.
	sandboxPrefixLen = prefixLen + len(sandboxMarker)
	// KeyLen is the length of every live API key and user token.
	KeyLen = prefixLen + randomLen + checksumLen
	// SandboxKeyLen is the length of every sandbox API key and user token.
	SandboxKeyLen = sandboxPrefixLen + randomLen + checksumLen
	// KeyIDLen is the length of a keyID in hex characters.
	KeyIDLen = 12
)
