package breaker

import (
	"errors"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrRateLimited is returned when a rate limit refuses a call.
var ErrRateLimited = errors.New("breaker: rate limited")

// RateLimit is a token bucket: PerSecond tokens are added each second up
// to Burst, and each call takes one. The zero value admits one call and
// then nothing. It is a plain value, safe to copy and share.
type RateLimit struct {
	// PerSecond is the sustained rate of calls.
	PerSecond float64
	// Burst is how many calls may pass at once after a quiet period. Zero
	// means one.
	Burst int
}

// NewLimiter returns a [rate.Limiter] for l, full at the start.
func (l RateLimit) NewLimiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(l.PerSecond), max(l.Burst, 1))
}

// RetryAfter returns how long after now lim will have a token for one
// call; zero when it has one now. It reserves nothing.
func RetryAfter(lim *rate.Limiter, now time.Time) time.Duration {
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	r := float64(lim.Limit())
	if r <= 0 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration((1 - tokens) / r * float64(time.Second))
}

// DefaultMaxKeys is the default bound on the number of keys of a
// [KeyedLimiter].
const DefaultMaxKeys = 10_000

const keyedShards = 16

// KeyedLimiter keeps one [RateLimit] bucket per key (a peer identity, a
// route) in a bounded structure: at most maxKeys buckets live at once,
// and when a new key arrives at the bound, the least recently used key of
// its shard is forgotten (it starts again with a full bucket if it comes
// back). A flood of distinct keys therefore costs bounded memory.
//
// A KeyedLimiter is safe for concurrent use; Allow for a key already
// present does not allocate. The zero value is not usable; build one
// with [NewKeyedLimiter].
type KeyedLimiter struct {
	limit  RateLimit
	seed   maphash.Seed
	shards [keyedShards]keyedShard
}

type keyedShard struct {
	mu   sync.Mutex
	max  int
	m    map[string]*keyedEntry
	head keyedEntry // sentinel of the LRU list: head.next is the newest
}

type keyedEntry struct {
	key        string
	lim        *rate.Limiter
	prev, next *keyedEntry
}

// NewKeyedLimiter returns a limiter applying l to each key, remembering
// at most maxKeys keys (zero or less means [DefaultMaxKeys]).
func NewKeyedLimiter(l RateLimit, maxKeys int) *KeyedLimiter {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	k := &KeyedLimiter{limit: l, seed: maphash.MakeSeed()}
	per := max(maxKeys/keyedShards, 1)
	for i := range k.shards {
		s := &k.shards[i]
		s.max = per
		s.m = make(map[string]*keyedEntry)
		s.head.next, s.head.prev = &s.head, &s.head
	}
	return k
}

// Allow takes a token for key at now. When there is none it returns
// false and how long after now one will be available.
func (k *KeyedLimiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	s := &k.shards[maphash.String(k.seed, key)%keyedShards]
	s.mu.Lock()
	e := s.m[key]
	if e == nil {
		e = s.add(key, k.limit)
	} else if s.head.next != e {
		e.unlink()
		s.pushFront(e)
	}
	lim := e.lim
	s.mu.Unlock()
	if lim.AllowN(now, 1) {
		return true, 0
	}
	return false, RetryAfter(lim, now)
}

// Len returns the number of keys remembered.
func (k *KeyedLimiter) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Cap returns the most keys the limiter remembers at once.
func (k *KeyedLimiter) Cap() int { return k.shards[0].max * keyedShards }

func (s *keyedShard) add(key string, l RateLimit) *keyedEntry {
	var e *keyedEntry
	if len(s.m) >= s.max {
		// Reuse the least recently used entry.
		e = s.head.prev
		e.unlink()
		delete(s.m, e.key)
		e.key = key
		e.lim = l.NewLimiter()
	} else {
		e = &keyedEntry{key: key, lim: l.NewLimiter()}
	}
	s.m[key] = e
	s.pushFront(e)
	return e
}

func (s *keyedShard) pushFront(e *keyedEntry) {
	e.prev = &s.head
	e.next = s.head.next
	s.head.next.prev = e
	s.head.next = e
}

func (e *keyedEntry) unlink() {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}
