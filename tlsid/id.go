package tlsid

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxIDLength is the longest SPIFFE ID weft accepts, in bytes. The SPIFFE
// specification requires implementations to accept IDs up to this length;
// weft refuses longer ones, which go-spiffe would accept.
const MaxIDLength = 2048

// MaxTrustDomainLength is the longest trust domain name weft accepts, in
// bytes, as the SPIFFE specification says. go-spiffe does not check it.
const MaxTrustDomainLength = 255

var (
	// ErrBadID reports a string that is not a well-formed SPIFFE ID
	// (wrong or uppercase scheme, uppercase or missing trust domain, port,
	// userinfo, percent-encoding, empty, "." or ".." segments, trailing
	// slash, query or fragment). The wrapped error says which rule.
	ErrBadID = errors.New("tlsid: malformed SPIFFE ID")

	// ErrIDTooLong reports an ID longer than [MaxIDLength] bytes or a
	// trust domain longer than [MaxTrustDomainLength] bytes.
	ErrIDTooLong = errors.New("tlsid: SPIFFE ID too long")
)

// ParseID parses s as a SPIFFE ID with go-spiffe's [spiffeid.FromString]
// and applies weft's length limits. It accepts IDs with no path (a trust
// domain's own ID); use [ParseWorkloadID] for an ID that must name a
// workload.
func ParseID(s string) (spiffeid.ID, error) {
	if len(s) > MaxIDLength {
		return spiffeid.ID{}, fmt.Errorf("%w: %d bytes, at most %d", ErrIDTooLong, len(s), MaxIDLength)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %q: %v", ErrBadID, truncate(s), err)
	}
	if n := len(id.TrustDomain().Name()); n > MaxTrustDomainLength {
		return spiffeid.ID{}, fmt.Errorf("%w: trust domain of %d bytes, at most %d", ErrIDTooLong, n, MaxTrustDomainLength)
	}
	return id, nil
}

// ParseWorkloadID is [ParseID] for the ID of a workload: one with a
// non-root path, as an X.509-SVID leaf must carry. An ID with no path
// fails with [ErrRootPathID].
func ParseWorkloadID(s string) (spiffeid.ID, error) {
	id, err := ParseID(s)
	if err != nil {
		return id, err
	}
	if err := CheckWorkloadID(id); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// CheckWorkloadID applies weft's rules for the ID of a peer, beyond what
// go-spiffe checks: it is not zero, names a workload (a non-root path,
// else [ErrRootPathID]) and is within the length limits (else
// [ErrIDTooLong]).
func CheckWorkloadID(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return fmt.Errorf("%w: zero ID", ErrBadID)
	case len(id.String()) > MaxIDLength:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrIDTooLong, len(id.String()), MaxIDLength)
	case len(id.TrustDomain().Name()) > MaxTrustDomainLength:
		return fmt.Errorf("%w: trust domain of %d bytes, at most %d", ErrIDTooLong, len(id.TrustDomain().Name()), MaxTrustDomainLength)
	case id.Path() == "":
		return fmt.Errorf("%w: %s", ErrRootPathID, id)
	}
	return nil
}

// truncate bounds wire input quoted in errors and logs.
func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
