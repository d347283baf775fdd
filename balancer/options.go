package balancer

import "time"

// Defaults of the policies and of the [Outlier] detector (the values
// Envoy, grpc-go, Finagle and linkerd2-proxy use).
const (
	// DefaultDecay is the time constant of [PeakEWMA]'s latency EWMA.
	DefaultDecay = 10 * time.Second
	// DefaultLatency was [PeakEWMA]'s constant cost for an endpoint with
	// no history.
	//
	// Deprecated: a constant cost that never decays starved new
	// endpoints; PeakEWMA now tries an endpoint with no latency sample at
	// once, one probe at a time, and does not read this value.
	DefaultLatency = 30 * time.Millisecond
	// DefaultRingSize is [RingHash]'s minimum number of points on the ring.
	DefaultRingSize = 1024
	// DefaultTableSize is [Maglev]'s lookup table size (a prime).
	DefaultTableSize = 65537
	// DefaultConsecutiveFailures ejects an endpoint after this many
	// failures in a row.
	DefaultConsecutiveFailures = 5
	// DefaultInterval is how often success rates are compared and
	// ejection multipliers decay.
	DefaultInterval = 10 * time.Second
	// DefaultBaseEjection is the first ejection time; the n-th ejection
	// lasts n times as long, up to DefaultMaxEjection.
	DefaultBaseEjection = 30 * time.Second
	// DefaultMaxEjection caps the ejection time.
	DefaultMaxEjection = 300 * time.Second
	// DefaultMaxEjected is the largest share of endpoints ejected at
	// once (at least one endpoint may always be ejected).
	DefaultMaxEjected = 0.10
	// DefaultPanicThreshold: when fewer than this share of endpoints is
	// not ejected, ejection is ignored and traffic goes to all endpoints.
	DefaultPanicThreshold = 0.50
	// DefaultZoneMinHealthy: [ZoneAware] keeps all traffic in the local
	// zone while at least this share of its endpoints is not ejected.
	DefaultZoneMinHealthy = 0.70
)

// Option configures [New] and the policy constructors. Each constructor
// reads the options that concern it and ignores the others; each WithX
// says who reads it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	now     func() time.Time
	onEject func(Ejection)

	seed   uint64
	seeded bool

	decay          time.Duration
	defaultLatency time.Duration
	slowStart      SlowStart
	ringSize       int
	tableSize      int

	consecutive    int64
	interval       time.Duration
	baseEjection   time.Duration
	maxEjection    time.Duration
	maxEjected     float64
	panicThreshold float64
	srMinRequests  int64
	srMinHosts     int
	srStdevFactor  float64

	zoneMinHealthy float64
	fallback       bool
}

func newConfig(opts []Option) config {
	c := config{
		decay:          DefaultDecay,
		defaultLatency: DefaultLatency,
		ringSize:       DefaultRingSize,
		tableSize:      DefaultTableSize,
		consecutive:    DefaultConsecutiveFailures,
		interval:       DefaultInterval,
		baseEjection:   DefaultBaseEjection,
		maxEjection:    DefaultMaxEjection,
		maxEjected:     DefaultMaxEjected,
		panicThreshold: DefaultPanicThreshold,
		srMinRequests:  100,
		srMinHosts:     5,
		srStdevFactor:  1.9,
		zoneMinHealthy: DefaultZoneMinHealthy,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

// WithClock sets the clock a [Balancer] reads for latency EWMAs and
// outlier ejection, for tests and simulations. Read by [New]; a nil
// function is ignored (the default is the monotonic clock).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) {
		if now != nil {
			c.now = now
		}
	})
}

// Ejection reports that outlier detection ([Outlier]) took an endpoint
// out of rotation.
type Ejection struct {
	// ID is the endpoint's ID.
	ID string
	// Duration is how long the endpoint stays out; it comes back on its
	// own at the first pick after that.
	Duration time.Duration
}

// WithEjectionHook sets a function told of every ejection an [Outlier]
// policy of the [Balancer] makes, for telemetry and logs. It is called
// after the ejection took effect, outside the balancer's locks, from the
// goroutine whose reported outcome led to it, so it must not block; it
// is called concurrently when outcomes are. Re-admission is lazy (the
// first pick after the ejection time) and is not reported. Read by
// [New]; a nil function is ignored.
func WithEjectionHook(fn func(Ejection)) Option {
	return optionFunc(func(c *config) {
		if fn != nil {
			c.onEject = fn
		}
	})
}

// WithSeed makes the random choices of a policy (random start, random and
// weighted random picks, the two choices of P2C, zone spill-over)
// reproducible: each picker draws from a lock-free splitmix64 sequence
// started at seed. Read by every policy; by default the policies use
// math/rand/v2's per-thread generator.
func WithSeed(seed uint64) Option {
	return optionFunc(func(c *config) { c.seed, c.seeded = seed, true })
}

// WithDecay sets [PeakEWMA]'s decay time constant (default
// [DefaultDecay]). Values ≤ 0 are ignored.
func WithDecay(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.decay = d
		}
	})
}

// WithDefaultLatency set [PeakEWMA]'s constant cost for endpoints with
// no history.
//
// Deprecated: PeakEWMA tries an endpoint with no latency sample at once,
// one probe at a time, and ignores this option.
func WithDefaultLatency(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.defaultLatency = d
		}
	})
}

// WithRingSize sets [RingHash]'s minimum ring size (default
// [DefaultRingSize]); values below 1024 are raised to 1024. The ring has
// at least one point per endpoint.
func WithRingSize(n int) Option {
	return optionFunc(func(c *config) { c.ringSize = max(n, 1024) })
}

// WithTableSize sets [Maglev]'s lookup table size (default
// [DefaultTableSize]); it is raised to the next prime, and to a prime at
// least as large as the endpoint count.
func WithTableSize(n int) Option {
	return optionFunc(func(c *config) { c.tableSize = nextPrime(max(n, 2)) })
}

// WithConsecutiveFailures sets how many failures in a row eject an
// endpoint (default [DefaultConsecutiveFailures]). Read by [Outlier];
// values < 1 are ignored.
func WithConsecutiveFailures(n int) Option {
	return optionFunc(func(c *config) {
		if n >= 1 {
			c.consecutive = int64(n)
		}
	})
}

// WithEjectionTime sets the base ejection time, multiplied by the number
// of times the endpoint was ejected, and its cap (defaults
// [DefaultBaseEjection], [DefaultMaxEjection]). Read by [Outlier]; values
// ≤ 0 are ignored; a cap below the base is raised to the base.
func WithEjectionTime(base, maxTime time.Duration) Option {
	return optionFunc(func(c *config) {
		if base > 0 {
			c.baseEjection = base
		}
		if maxTime > 0 {
			c.maxEjection = maxTime
		}
		c.maxEjection = max(c.maxEjection, c.baseEjection)
	})
}

// WithInterval sets how often [Outlier] compares success rates and decays
// ejection multipliers (default [DefaultInterval]). Values ≤ 0 are ignored.
func WithInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.interval = d
		}
	})
}

// WithMaxEjected sets the largest share of endpoints [Outlier] ejects at
// once (default [DefaultMaxEjected]); one endpoint may always be
// ejected. Values outside [0, 1] are ignored.
func WithMaxEjected(share float64) Option {
	return optionFunc(func(c *config) {
		if share >= 0 && share <= 1 {
			c.maxEjected = share
		}
	})
}

// WithPanicThreshold sets [Outlier]'s panic threshold (default
// [DefaultPanicThreshold]): when the share of endpoints not ejected falls
// below it, picks ignore ejection and spread over all endpoints. 0
// disables panic mode. Values outside [0, 1] are ignored.
func WithPanicThreshold(share float64) Option {
	return optionFunc(func(c *config) {
		if share >= 0 && share <= 1 {
			c.panicThreshold = share
		}
	})
}

// WithSuccessRate configures [Outlier]'s success-rate ejection: every
// interval, among endpoints with at least minRequests outcomes, if there
// are at least minHosts of them, an endpoint whose success rate is below
// mean − stdevFactor × standard deviation is ejected (defaults 100, 5,
// 1.9, as in Envoy). minRequests < 1 disables success-rate ejection;
// other values < 1 or ≤ 0 keep their default.
func WithSuccessRate(minRequests, minHosts int, stdevFactor float64) Option {
	return optionFunc(func(c *config) {
		c.srMinRequests = int64(minRequests)
		if minHosts >= 1 {
			c.srMinHosts = minHosts
		}
		if stdevFactor > 0 {
			c.srStdevFactor = stdevFactor
		}
	})
}

// WithZoneMinHealthy sets the share of local endpoints that must be
// healthy (not ejected) for [ZoneAware] to keep all traffic local
// (default [DefaultZoneMinHealthy]). Below it, the local zone gets
// traffic in proportion to its healthy share and the rest spills over to
// every zone. Values outside (0, 1] are ignored.
func WithZoneMinHealthy(share float64) Option {
	return optionFunc(func(c *config) {
		if share > 0 && share <= 1 {
			c.zoneMinHealthy = share
		}
	})
}

// WithFallback makes [Subset] balance over every endpoint when no
// endpoint matches, instead of failing with [ErrNoEndpoints].
func WithFallback() Option {
	return optionFunc(func(c *config) { c.fallback = true })
}

func nextPrime(n int) int {
	if n <= 2 {
		return 2
	}
	if n%2 == 0 {
		n++
	}
	for ; ; n += 2 {
		prime := true
		for d := 3; d*d <= n; d += 2 {
			if n%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			return n
		}
	}
}
