package breaker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [BudgetSettings], those of Finagle and Linkerd.
const (
	DefaultRetryRatio     = 0.2
	DefaultRetryPerSecond = 10
	DefaultBudgetWindow   = 10 * time.Second
)

// budgetBuckets is the number of buckets the sliding window is cut into.
const budgetBuckets = 10

// BudgetSettings configure a [Budget]. The zero value gives the defaults:
// retries may add 20% to the requests of the last 10 s, plus 10 retries
// per second of the window.
type BudgetSettings struct {
	// Ratio is the fraction of recent requests that may be retried. Zero
	// means [DefaultRetryRatio]; a negative value means none.
	Ratio float64
	// PerSecond is a floor of retries per second always allowed, so that
	// a client with little traffic can still retry. Zero means
	// [DefaultRetryPerSecond]; a negative value means none.
	PerSecond float64
	// Window is the sliding window over which requests and retries are
	// counted. Zero means [DefaultBudgetWindow].
	Window time.Duration
}

// Budget is a retry budget (Finagle and Linkerd style): over a sliding
// window, retries may number at most Ratio × requests + PerSecond ×
// window seconds. Hedged attempts draw on it like retries.
//
// Time is passed in by the caller (read the clock once per call), so
// tests drive it. A Budget is safe for concurrent use; recording a
// request is a few atomic operations and does not allocate. The zero
// value is not usable; build one with [NewBudget].
type Budget struct {
	ratio  float64
	floor  float64 // retries per window
	bucket int64   // nanoseconds per bucket

	mu      sync.Mutex // serialises bucket resets and withdrawals
	buckets [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	epoch    atomic.Int64 // bucket number since the Unix epoch
	requests atomic.Int64
	retries  atomic.Int64
}

// NewBudget returns a budget configured by s.
func NewBudget(s BudgetSettings) *Budget {
	if s.Ratio == 0 {
		s.Ratio = DefaultRetryRatio
	}
	if s.PerSecond == 0 {
		s.PerSecond = DefaultRetryPerSecond
	}
	if s.Window <= 0 {
		s.Window = DefaultBudgetWindow
	}
	b := &Budget{
		ratio:  max(s.Ratio, 0),
		floor:  max(s.PerSecond, 0) * s.Window.Seconds(),
		bucket: max(int64(s.Window/budgetBuckets), 1),
	}
	return b
}

// at returns the bucket for time now, reset if it held an older epoch.
func (b *Budget) at(now time.Time) *budgetBucket {
	epoch := now.UnixNano() / b.bucket
	bk := &b.buckets[epoch%budgetBuckets]
	if bk.epoch.Load() != epoch {
		b.mu.Lock()
		if bk.epoch.Load() != epoch {
			bk.requests.Store(0)
			bk.retries.Store(0)
			bk.epoch.Store(epoch)
		}
		b.mu.Unlock()
	}
	return bk
}

// Request records one original request (not a retry) at now.
func (b *Budget) Request(now time.Time) {
	b.at(now).requests.Add(1)
}

// TryRetry reports whether a retry (or hedge) may be sent at now, and if
// so records it.
func (b *Budget) TryRetry(now time.Time) bool {
	bk := b.at(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	requests, retries := b.sum(now)
	if float64(retries+1) > b.ratio*float64(requests)+b.floor {
		return false
	}
	bk.retries.Add(1)
	return true
}

// Available returns how many retries the budget allows at now.
func (b *Budget) Available(now time.Time) int {
	requests, retries := b.sum(now)
	n := int(b.ratio*float64(requests)+b.floor) - int(retries)
	return max(n, 0)
}

func (b *Budget) sum(now time.Time) (requests, retries int64) {
	epoch := now.UnixNano() / b.bucket
	for i := range b.buckets {
		bk := &b.buckets[i]
		if e := bk.epoch.Load(); e <= epoch && e > epoch-budgetBuckets {
			requests += bk.requests.Load()
			retries += bk.retries.Load()
		}
	}
	return requests, retries
}
