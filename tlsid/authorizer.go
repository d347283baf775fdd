package tlsid

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrUnauthorized is wrapped by every error an [Authorizer] returns to
// refuse a peer.
var ErrUnauthorized = errors.New("tlsid: peer not authorized")

// Authorizer decides whether a peer with a verified SPIFFE ID may connect.
// It returns nil to allow, or an error wrapping [ErrUnauthorized].
// Authorizers are called concurrently, once per handshake.
type Authorizer func(peer spiffeid.ID) error

// AuthorizeAny allows every peer with a valid SVID.
func AuthorizeAny() Authorizer {
	return func(spiffeid.ID) error { return nil }
}

// AuthorizeID allows exactly the given ID.
func AuthorizeID(allowed spiffeid.ID) Authorizer {
	return AuthorizeOneOf(allowed)
}

// AuthorizeOneOf allows any of the given IDs.
func AuthorizeOneOf(allowed ...spiffeid.ID) Authorizer {
	set := make(map[spiffeid.ID]struct{}, len(allowed))
	for _, id := range allowed {
		set[id] = struct{}{}
	}
	return func(peer spiffeid.ID) error {
		if _, ok := set[peer]; ok {
			return nil
		}
		return fmt.Errorf("%w: %s is not an allowed ID", ErrUnauthorized, peer)
	}
}

// AuthorizeMemberOf allows every ID of the trust domain td. Trust domains
// are compared whole: example.org does not admit example.orgi or
// example.org.evil.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(peer spiffeid.ID) error {
		if peer.MemberOf(td) {
			return nil
		}
		return fmt.Errorf("%w: %s is not a member of %s", ErrUnauthorized, peer, td)
	}
}
