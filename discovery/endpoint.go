package discovery

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrBadEndpoint is wrapped by every error that reports an endpoint that
// cannot be used: an empty or malformed address, a port out of range, a
// missing or duplicate ID.
var ErrBadEndpoint = errors.New("discovery: bad endpoint")

// Endpoint is one instance of a service.
//
// Endpoints are values; a set delivered in an [Update] is never modified
// afterwards, so readers may keep it without copying.
type Endpoint struct {
	// ID identifies the instance within its service. It is stable across
	// updates, so per-endpoint state (load, breakers) can be kept by ID.
	ID string
	// Addr is the instance's address as host:port; IPv6 hosts are bracketed.
	Addr string
	// Weight is the instance's relative share of traffic for weighted
	// policies. Zero means 1.
	Weight uint32
	// Zone is the locality of the instance, empty when unknown.
	Zone string
	// Tags are free-form labels, as in Consul.
	Tags []string
	// Meta holds key/value metadata, as in Consul's service meta.
	Meta map[string]string
	// Identity is the SPIFFE ID the instance's server must present: a
	// client in the mesh refuses a server that presents another one
	// (secure naming). Zero when unknown; a client then accepts any
	// server its authorizer admits (by default, any of its own trust
	// domain). Static discovery takes it from the program, and
	// [WithNaming] fills it from a per-service naming rule.
	Identity spiffeid.ID
}

// EffectiveWeight returns e.Weight, or 1 when it is zero.
func (e *Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// HasTag reports whether e carries tag.
func (e *Endpoint) HasTag(tag string) bool {
	for _, t := range e.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// Validate reports whether e can be dialled: it needs an ID and an address
// of the form host:port with a non-empty host and a port in 1..65535.
// Errors wrap [ErrBadEndpoint].
func (e *Endpoint) Validate() error {
	if e.ID == "" {
		return fmt.Errorf("%w: empty ID (address %q)", ErrBadEndpoint, e.Addr)
	}
	return ValidateAddr(e.Addr)
}

// ValidateAddr reports whether addr is a dialable host:port: a non-empty
// host, IPv6 hosts in brackets, and a numeric port in 1..65535. Errors wrap
// [ErrBadEndpoint].
func ValidateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %v", ErrBadEndpoint, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: address %q has no host", ErrBadEndpoint, addr)
	}
	if strings.ContainsAny(host, " /\\@?#") {
		return fmt.Errorf("%w: address %q has a malformed host", ErrBadEndpoint, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%w: address %q: port must be 1..65535", ErrBadEndpoint, addr)
	}
	return nil
}

// Update is the state of one service as a [Watcher] knows it.
type Update struct {
	// Service is the name of the service.
	Service string
	// Endpoints is the full set of usable endpoints: the last good set when
	// Err is not nil. An empty set is a real answer (no healthy instance),
	// not an error. The slice and its elements must not be modified.
	Endpoints []Endpoint
	// Err is the last error of the backend, nil once it answers again.
	// While Err is set, Endpoints still holds the last good set.
	Err error
	// HeldSince is zero when Endpoints is the backend's current set. A
	// [HoldLastSet] watcher sets it while it delivers the last non-empty
	// set in place of an empty one: it is when the set became empty.
	HeldSince time.Time
}
