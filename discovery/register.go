package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrRegistration is wrapped by the errors of [Register] and of a
// [Registration]'s methods.
var ErrRegistration = errors.New("discovery: registration")

// Registration defaults.
const (
	// DefaultDrainGrace is how long [Registration.Drain] waits, after
	// Consul stopped listing the instance as healthy, before it
	// deregisters it: time for watchers' blocking queries to return and
	// for their clients to finish the requests they had started.
	DefaultDrainGrace = time.Second
	// DefaultCheckInterval is the interval of HTTP and gRPC checks.
	DefaultCheckInterval = 10 * time.Second
)

// Instance describes the instance of a service that this process runs, as
// [Register] announces it to Consul.
type Instance struct {
	// ID identifies the instance; it must be unique on its Consul agent.
	ID string
	// Name is the service's name.
	Name string
	// Address is the host (or IP) clients dial; empty means the agent's
	// node address.
	Address string
	// Port is the port clients dial, 1..65535.
	Port int
	// Tags and Meta are published with the instance.
	Tags []string
	Meta map[string]string
	// Weight is the instance's weight while passing (Consul's
	// Weights.Passing); 0 means 1.
	Weight int
}

// RegisterOption configures [Register].
type RegisterOption interface{ applyRegister(*registerConfig) }

type registerOptionFunc func(*registerConfig)

func (f registerOptionFunc) applyRegister(c *registerConfig) { f(c) }

type registerConfig struct {
	check        *api.AgentServiceCheck
	ttl          time.Duration
	deregister   time.Duration
	grace        time.Duration
	logger       *slog.Logger
	pollInterval time.Duration
	resync       time.Duration
	backoffMin   time.Duration
	backoffMax   time.Duration
	onReregister func(Reregistration)
}

// WithHTTPCheck makes Consul probe url (HTTP GET, healthy on 2xx) every
// interval (default [DefaultCheckInterval] when ≤ 0).
func WithHTTPCheck(url string, interval time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		c.ttl = 0
		c.check = &api.AgentServiceCheck{HTTP: url, Interval: durOr(interval, DefaultCheckInterval)}
	})
}

// WithGRPCCheck makes Consul call the grpc.health.v1 Check method at
// target ("host:port" or "host:port/service") every interval (default
// [DefaultCheckInterval] when ≤ 0), over TLS when useTLS is set.
func WithGRPCCheck(target string, useTLS bool, interval time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		c.ttl = 0
		c.check = &api.AgentServiceCheck{GRPC: target, GRPCUseTLS: useTLS, Interval: durOr(interval, DefaultCheckInterval)}
	})
}

// WithTTLCheck gives the instance a TTL check that the [Registration]
// keeps passing from its own goroutine, every ttl/3, until it is drained
// or deregistered; if the process stops heartbeating, Consul marks the
// instance critical after ttl. This is the check for servers Consul cannot
// probe (mutual TLS with SPIFFE identities). Values < 1 s are ignored.
func WithTTLCheck(ttl time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if ttl >= time.Second {
			c.check, c.ttl = nil, ttl
		}
	})
}

// WithDeregisterCriticalAfter makes Consul remove the instance once its
// check has been critical for d (Consul's minimum is one minute, and its
// reaper runs every 30 s). Values ≤ 0 are ignored.
func WithDeregisterCriticalAfter(d time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if d > 0 {
			c.deregister = d
		}
	})
}

// WithDrainGrace sets how long [Registration.Drain] waits between Consul
// listing the instance as unhealthy and deregistering it (default
// [DefaultDrainGrace]). Values < 0 are ignored.
func WithDrainGrace(d time.Duration) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if d >= 0 {
			c.grace = d
		}
	})
}

// WithRegisterLogger sets where heartbeat failures are logged. A nil
// logger is ignored; the default discards.
func WithRegisterLogger(l *slog.Logger) RegisterOption {
	return registerOptionFunc(func(c *registerConfig) {
		if l != nil {
			c.logger = l
		}
	})
}

func durOr(d, def time.Duration) string {
	if d <= 0 {
		d = def
	}
	return d.String()
}

// Registration is an instance registered in Consul by [Register]. Drain
// or deregister it when the process stops serving.
//
// It heals itself: its goroutine heartbeats a TTL check every ttl/3 (or,
// for other checks, asks the agent every [WithResyncInterval] whether it
// still has the instance), and when the agent answers that it does not
// know the instance or its check — Consul reaped it after
// DeregisterCriticalServiceAfter, someone deregistered it, or the agent
// restarted without its state — it registers the instance again with its
// check, backing off between failures ([WithReregisterBackoff]), and
// resumes. Each re-registration is counted in [Registration.Status] and
// reported to [WithReregisterHook].
//
// A Registration is safe for concurrent use; the zero value is not
// usable.
type Registration struct {
	client  *api.Client
	inst    Instance
	cfg     registerConfig
	token   string
	checkID string
	reg     *api.AgentServiceRegistration // what Register sent, sent again when the agent forgets it

	hbCancel context.CancelFunc
	hbDone   chan struct{}

	mu     sync.Mutex
	status RegistrationStatus
	closed bool
}

// Register announces inst to the Consul agent described by cfg (nil means
// [api.DefaultConfig]) with the health check given by opts, and starts the
// heartbeat of a TTL check. Without a check option the instance is
// registered without a check (always passing). Until Drain or Deregister,
// a goroutine keeps the instance registered (see [Registration]). Errors wrap
// [ErrRegistration] (and [ErrBadEndpoint] for a bad ID, name, address or
// port); nothing is registered when Register fails.
func Register(ctx context.Context, cfg *api.Config, inst Instance, opts ...RegisterOption) (*Registration, error) {
	c := registerConfig{
		grace: DefaultDrainGrace, pollInterval: 50 * time.Millisecond, resync: DefaultResyncInterval,
		backoffMin: DefaultReregisterBackoff, backoffMax: DefaultReregisterMaxBackoff,
	}
	for _, o := range opts {
		if o != nil {
			o.applyRegister(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.backoffMax = max(c.backoffMax, c.backoffMin)
	if err := checkInstance(inst); err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	r := &Registration{inst: inst, cfg: c, token: cfg.Token, checkID: "service:" + inst.ID}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, r.errorf("client: %v", err)
	}
	r.client = client
	reg := &api.AgentServiceRegistration{
		ID: inst.ID, Name: inst.Name, Address: inst.Address, Port: inst.Port,
		Tags: append([]string(nil), inst.Tags...), Meta: inst.Meta,
	}
	if inst.Weight > 0 {
		reg.Weights = &api.AgentWeights{Passing: inst.Weight, Warning: 1}
	}
	check := c.check
	if c.ttl > 0 {
		// Passing from the start: the instance is serving when it
		// registers.
		check = &api.AgentServiceCheck{TTL: c.ttl.String(), Status: api.HealthPassing}
	}
	if check != nil {
		check.CheckID = r.checkID
		if c.deregister > 0 {
			check.DeregisterCriticalServiceAfter = c.deregister.String()
		}
		reg.Check = check
	}
	if err := client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)); err != nil {
		return nil, r.errorf("register %q: %v", inst.ID, err)
	}
	r.reg = reg
	r.status = RegistrationStatus{Registered: true, LastHeartbeat: time.Now()}
	hbCtx, cancel := context.WithCancel(context.Background())
	r.hbCancel, r.hbDone = cancel, make(chan struct{})
	go r.keep(hbCtx)
	return r, nil
}

// checkInstance validates inst before anything is sent.
func checkInstance(inst Instance) error {
	if inst.ID == "" || inst.Name == "" {
		return fmt.Errorf("%w: %w: instance needs an ID and a name (ID %q, name %q)", ErrRegistration, ErrBadEndpoint, inst.ID, inst.Name)
	}
	if strings.ContainsAny(inst.ID, "/?#") || strings.ContainsAny(inst.Name, "/?#") {
		return fmt.Errorf("%w: %w: ID %q or name %q contains '/', '?' or '#'", ErrRegistration, ErrBadEndpoint, inst.ID, inst.Name)
	}
	host := inst.Address
	if host == "" {
		host = "127.0.0.1" // the agent fills in its node address; only the port is checked
	}
	h, err := consulHost(host)
	if err != nil {
		return fmt.Errorf("%w: %w: %v", ErrRegistration, ErrBadEndpoint, err)
	}
	if err := ValidateAddr(net.JoinHostPort(h, strconv.Itoa(inst.Port))); err != nil {
		return fmt.Errorf("%w: %w", ErrRegistration, err)
	}
	if inst.Weight < 0 {
		return fmt.Errorf("%w: %w: negative weight %d", ErrRegistration, ErrBadEndpoint, inst.Weight)
	}
	return nil
}

func (r *Registration) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if r.token != "" {
		msg = strings.ReplaceAll(msg, r.token, "[redacted]")
	}
	return fmt.Errorf("%w: %s", ErrRegistration, msg)
}

// ID returns the instance's ID.
func (r *Registration) ID() string { return r.inst.ID }

// Err returns the error of the last heartbeat, confirmation or
// re-registration ([RegistrationStatus.Err]), nil when it succeeded.
func (r *Registration) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.Err
}

// stopHeartbeat stops the heartbeat goroutine and waits for it; it
// reports whether this call closed the registration.
func (r *Registration) stopHeartbeat() bool {
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	r.mu.Unlock()
	if r.hbCancel != nil {
		r.hbCancel()
		<-r.hbDone
	}
	r.setStatus(func(s *RegistrationStatus) { s.Registered = false })
	return first
}

// Drain takes the instance out of service gracefully: it stops the
// heartbeat, puts the instance in maintenance (a critical check, so
// watchers drop it), waits until Consul's health endpoint no longer lists
// it as passing and then [WithDrainGrace] more, so watchers have seen it
// and their requests in flight could finish, and finally deregisters it.
//
// Drain does not outlive ctx: when ctx ends first it stops waiting and
// still deregisters (with a short deadline of its own). Every failure is
// reported in the returned error; it wraps [ErrRegistration]. Calling
// Drain or [Registration.Deregister] again does nothing and returns nil.
func (r *Registration) Drain(ctx context.Context) error {
	if !r.stopHeartbeat() {
		return nil
	}
	var errs []error
	q := (&api.QueryOptions{}).WithContext(ctx)
	if err := r.client.Agent().EnableServiceMaintenanceOpts(r.inst.ID, "weft: draining", q); err != nil {
		errs = append(errs, r.errorf("drain %q: maintenance: %v", r.inst.ID, err))
	} else if err := r.waitUnlisted(ctx); err != nil {
		errs = append(errs, err)
	} else {
		t := time.NewTimer(r.cfg.grace)
		select {
		case <-ctx.Done():
			errs = append(errs, r.errorf("drain %q: grace period cut short: %v", r.inst.ID, ctx.Err()))
		case <-t.C:
		}
		t.Stop()
	}
	if err := r.deregister(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitUnlisted polls the agent until the instance is no longer among the
// service's passing instances, or ctx ends.
func (r *Registration) waitUnlisted(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.pollInterval)
	defer tick.Stop()
	for {
		entries, _, err := r.client.Health().Service(r.inst.Name, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil {
			listed := false
			for _, e := range entries {
				if e.Service != nil && e.Service.ID == r.inst.ID {
					listed = true
				}
			}
			if !listed {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return r.errorf("drain %q: still listed as passing when the wait ended: %v", r.inst.ID, ctx.Err())
		case <-tick.C:
		}
	}
}

// Deregister removes the instance from Consul at once, without draining,
// and stops the heartbeat. Calling it again, or after
// [Registration.Drain], does nothing and returns nil.
func (r *Registration) Deregister(ctx context.Context) error {
	if !r.stopHeartbeat() {
		return nil
	}
	return r.deregister(ctx)
}

func (r *Registration) deregister(ctx context.Context) error {
	if ctx.Err() != nil {
		// Still leave the catalog clean, within a bound of our own.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
	}
	if err := r.client.Agent().ServiceDeregisterOpts(r.inst.ID, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return r.errorf("deregister %q: %v", r.inst.ID, err)
	}
	return nil
}
