package route

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Source gives the current route table and what became of its updates.
// Both methods are safe for concurrent use.
type Source interface {
	// Table returns the current table, never nil. It takes no lock and
	// does not allocate (one atomic load), for the request path.
	Table() *Table
	// Status returns the current table and the updates refused, for
	// admin pages and health checks.
	Status() Status
}

// Status is what a source has done, for admin pages and health checks.
type Status struct {
	// Table is the current table.
	Table *Table
	// Updated is when Table was published.
	Updated time.Time
	// Rejected counts the updates refused since the source was made.
	Rejected uint64
	// LastRejection is the most recent refused update; nil when none was.
	LastRejection *Rejection
}

// Rejection is an update a source refused; its table stayed as it was.
type Rejection struct {
	// Source is the source's name ("static", "file:/etc/weft/routes.yaml").
	Source string
	// At is when the update was refused.
	At time.Time
	// Err says why: a [*ValidationError] listing each problem with its
	// path, or an error wrapping [ErrSyntax], [ErrEmpty] or a read error.
	Err error
}

// Error returns the source's name and why its update was refused.
func (r Rejection) Error() string { return fmt.Sprintf("%s: update refused: %v", r.Source, r.Err) }

// publisher compiles updates and publishes good tables: the part every
// source shares.
type publisher struct {
	name string
	opts options
	cur  atomic.Pointer[Table]

	upd    sync.Mutex      // serializes updates and their hooks
	warned map[string]bool // the current table's warnings, reported; guarded by upd

	mu       sync.Mutex // guards below; never held while a hook runs
	updated  time.Time
	rejected uint64
	last     *Rejection
}

func newPublisher(name string, opts []Option) *publisher {
	o := newOptions(opts)
	o.source = name
	p := &publisher{name: name, opts: o}
	p.cur.Store(&Table{source: name})
	return p
}

// Table returns the current table.
func (p *publisher) Table() *Table { return p.cur.Load() }

// Status returns what the source has done.
func (p *publisher) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Table: p.cur.Load(), Updated: p.updated, Rejected: p.rejected}
	if p.last != nil {
		r := *p.last
		s.LastRejection = &r
	}
	return s
}

// update compiles cfg and publishes it, or, when cfg (or err, the error
// of reading it) is bad, keeps the current table and records the
// rejection. Hooks run after the state is recorded, so they may read it.
// extra options are passed on to Compile.
func (p *publisher) update(cfg *Config, version string, err error, extra ...Option) error {
	p.upd.Lock()
	defer p.upd.Unlock()
	var t *Table
	if err == nil {
		o := p.opts
		o.version = version
		t, err = Compile(cfg, append(o.asOptions(), extra...)...)
	}
	now := p.opts.now()
	if err != nil {
		r := Rejection{Source: p.name, At: now, Err: err}
		p.mu.Lock()
		p.rejected++
		p.last = &r
		p.mu.Unlock()
		if p.opts.onReject != nil {
			p.opts.onReject(r)
		}
		return r
	}
	p.mu.Lock()
	p.cur.Store(t)
	p.updated = now
	p.mu.Unlock()
	p.reportWarnings(t)
	if p.opts.onUpdate != nil {
		p.opts.onUpdate(t)
	}
	return nil
}

// reportWarnings hands [WithOnWarning] the warnings of t that the table
// before it did not have. Called with upd held.
func (p *publisher) reportWarnings(t *Table) {
	if p.opts.onWarn == nil {
		return
	}
	now := make(map[string]bool, len(t.warnings))
	for _, w := range t.warnings {
		k := w.Path + "\x00" + w.Message
		if !now[k] && !p.warned[k] {
			p.opts.onWarn(p.name, w)
		}
		now[k] = true
	}
	p.warned = now
}

// asOptions returns the options Compile reads.
func (o options) asOptions() []Option {
	return []Option{WithVersion(o.version), WithSource(o.source)}
}

// Static is a source of configs given in code. It is safe for concurrent
// use. Build one with [NewStatic]; the zero value is not usable.
type Static struct {
	pub *publisher
}

var _ Source = (*Static)(nil)

// NewStatic returns a source whose table is cfg compiled; it fails with
// the [*ValidationError] of an invalid cfg. It reads [WithOnUpdate],
// [WithOnReject], [WithOnWarning], [WithClock] and [WithVersion].
func NewStatic(cfg *Config, opts ...Option) (*Static, error) {
	s := &Static{newPublisher("static", opts)}
	if err := s.pub.update(cfg, s.pub.opts.version, nil); err != nil {
		return nil, unwrapRejection(err)
	}
	return s, nil
}

// Update compiles cfg and publishes its table. When cfg is invalid the
// current table stays, the rejection is recorded ([Static.Status]) and
// reported to [WithOnReject], and Update returns a [Rejection] wrapping
// the [*ValidationError]. The version is a hash of cfg.
func (s *Static) Update(cfg *Config) error { return s.pub.update(cfg, "", nil) }

// Table returns the current table: one atomic load.
func (s *Static) Table() *Table { return s.pub.Table() }

// Status returns the current table and the rejections so far.
func (s *Static) Status() Status { return s.pub.Status() }

// Unwrap returns the reason of the rejection.
func (r Rejection) Unwrap() error { return r.Err }

func unwrapRejection(err error) error {
	var r Rejection
	if errors.As(err, &r) {
		return r.Err
	}
	return err
}
