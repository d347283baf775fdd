package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Re-registration defaults.
const (
	// DefaultResyncInterval is how often a [Registration] without a TTL
	// check asks its agent whether the instance is still registered.
	DefaultResyncInterval = 5 * time.Second
	// DefaultReregisterBackoff and DefaultReregisterMaxBackoff bound the
	// capped exponential backoff, with jitter, between failed
	// re-registrations.
	DefaultReregisterBackoff    = 250 * time.Millisecond
	DefaultReregisterMaxBackoff = 10 * time.Second
)

// RegistrationStatus is what a [Registration] knows about its instance's
// standing with the agent, as [Registration.Status] reports it.
type RegistrationStatus struct {
	// Registered reports whether the agent had the instance at the last
	// contact: false from the moment the agent answers that it does not
	// know the instance (or its check) until a re-registration succeeds,
	// and after Drain or Deregister.
	Registered bool
	// Reregistrations counts the successful re-registrations since
	// [Register].
	Reregistrations int
	// LastReregistration is when the latest re-registration succeeded;
	// zero when there was none.
	LastReregistration time.Time
	// LastHeartbeat is when the agent last accepted a TTL heartbeat or
	// confirmed the instance (checks other than TTL); zero before the
	// first one.
	LastHeartbeat time.Time
	// Failures counts consecutive failed heartbeats, confirmations and
	// re-registrations; 0 when healthy.
	Failures int
	// Err is the latest failure, nil once the agent answers well again.
	// It wraps [ErrRegistration].
	Err error
}

// Reregistration reports that a [Registration] registered its instance
// again after the agent forgot it: the instance was reaped
// (DeregisterCriticalServiceAfter), deregistered by someone else, or the
// agent restarted without its state.
type Reregistration struct {
	// ID and Service are the instance's ID and service name.
	ID, Service string
	// Cause is the agent's answer that showed the instance gone.
	Cause error
	// Attempts is how many registrations it took (1 when the first
	// succeeded).
	Attempts int
	// At is when the re-registration succeeded.
	At time.Time
}

// WithReregisterHook sets a function told of every re-registration, for
// telemetry and logs. It is called from the registration's own goroutine
// after the agent accepted the instance again, so it must not block. A
// nil function is ignored.
func WithReregisterHook(fn func(Reregistration)) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if fn != nil {
			c.onReregister = fn
		}
	})
}

// WithResyncInterval sets how often a registration whose check is not a
// TTL check (HTTP, gRPC, none) asks the agent whether it still has the
// instance, and registers it again when not (default
// [DefaultResyncInterval]). A TTL check needs no such question: its
// heartbeat, every ttl/3, gets the answer. Values ≤ 0 are ignored.
func WithResyncInterval(d time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if d > 0 {
			c.resync = d
		}
	})
}

// WithReregisterBackoff sets the backoff between failed re-registrations:
// min doubled per consecutive failure, capped at max, each wait drawn at
// random from its upper half (defaults [DefaultReregisterBackoff],
// [DefaultReregisterMaxBackoff]). Values ≤ 0 are ignored; max is raised
// to min when smaller.
func WithReregisterBackoff(min, max time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if min > 0 {
			c.backoffMin = min
		}
		if max > 0 {
			c.backoffMax = max
		}
	})
}

// Status returns the registration's standing with its agent. It is safe
// to call at any time, concurrently with everything else.
func (r *Registration) Status() RegistrationStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// keep is the registration's goroutine: it heartbeats the TTL check (or,
// for other checks, confirms the instance is still known) and registers
// the instance again whenever the agent answers that it does not know it,
// until ctx ends. Each call to the agent is bounded by callTimeout.
func (r *Registration) keep(ctx context.Context) {
	defer close(r.hbDone)
	every := r.cfg.resync
	if r.cfg.ttl > 0 {
		every = r.cfg.ttl / 3
	}
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.touch(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.setStatus(func(s *RegistrationStatus) {
				s.Registered, s.LastHeartbeat, s.Failures, s.Err = true, time.Now(), 0, nil
			})
			t.Reset(every)
			continue
		}
		werr := r.errorf("heartbeat %q: %v", r.inst.ID, err)
		if !forgotten(err) {
			r.fail(werr)
			t.Reset(every)
			continue
		}
		r.cfg.logger.Warn("discovery: agent forgot the instance; registering it again", "instance", r.inst.ID, "error", werr.Error())
		r.setStatus(func(s *RegistrationStatus) { s.Registered = false })
		if !r.reregister(ctx, werr) {
			return
		}
		t.Reset(every)
	}
}

// callTimeout bounds each call of the registration's goroutine, so an
// agent that accepts connections and never answers is a failure like any
// other: the heartbeat interval, at least a second.
func (r *Registration) callTimeout() time.Duration {
	if r.cfg.ttl > 0 {
		return max(r.cfg.ttl/3, time.Second)
	}
	return max(r.cfg.resync, time.Second)
}

// touch heartbeats the TTL check, or asks whether the instance is known.
func (r *Registration) touch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if r.cfg.ttl > 0 {
		return r.client.Agent().UpdateTTLOpts(r.checkID, "", api.HealthPassing, q)
	}
	_, _, err := r.client.Agent().Service(r.inst.ID, q)
	return err
}

// reregister registers the instance again, backing off between failures,
// until it succeeds (true) or ctx ends (false).
func (r *Registration) reregister(ctx context.Context, cause error) bool {
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, r.callTimeout())
		err := r.client.Agent().ServiceRegisterOpts(r.reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(callCtx))
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			ev := Reregistration{ID: r.inst.ID, Service: r.inst.Name, Cause: cause, Attempts: attempt, At: time.Now()}
			r.setStatus(func(s *RegistrationStatus) {
				s.Registered, s.Failures, s.Err = true, 0, nil
				s.Reregistrations++
				s.LastReregistration, s.LastHeartbeat = ev.At, ev.At
			})
			r.cfg.logger.Info("discovery: instance registered again", "instance", r.inst.ID, "attempts", attempt)
			if r.cfg.onReregister != nil {
				r.cfg.onReregister(ev)
			}
			return true
		}
		n := r.fail(r.errorf("re-register %q: %v", r.inst.ID, err))
		if !sleepCtx(ctx, backoffDelay(r.cfg.backoffMin, r.cfg.backoffMax, n)) {
			return false
		}
	}
}

// fail records a failure and returns the count of consecutive ones.
func (r *Registration) fail(err error) int {
	r.cfg.logger.Warn("discovery: registration", "instance", r.inst.ID, "error", err.Error())
	var n int
	r.setStatus(func(s *RegistrationStatus) {
		s.Failures++
		s.Err, n = err, s.Failures
	})
	return n
}

func (r *Registration) setStatus(fn func(*RegistrationStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.status)
}

// forgotten reports whether the agent's answer says it does not know the
// instance or its check: a 404, or the messages Consul versions use for
// an unknown check or service.
func forgotten(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"Unknown check", "Unknown service", "does not have associated TTL"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// backoffDelay returns the wait after n consecutive failures: lo·2^(n-1)
// capped at hi, drawn at random from its upper half.
func backoffDelay(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
