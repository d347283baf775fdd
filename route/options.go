package route

import "time"

// DefaultPollInterval is how often a [File] reads its file by default.
const DefaultPollInterval = time.Second

// Option configures [Compile] and the sources. Each function says which
// options it reads; the others are ignored.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	version  string
	source   string
	onUpdate func(*Table)
	onReject func(Rejection)
	onWarn   func(source string, w *FieldError)
	now      func() time.Time
	poll     time.Duration
	consul   consulSettings // read by NewConsul
	warnings []*FieldError  // added to the table's by Compile
}

func newOptions(opts []Option) options {
	o := options{now: time.Now, poll: DefaultPollInterval, consul: defaultConsulSettings()}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// WithVersion sets the version recorded in the table ([Table.Version]);
// by default it is a hash of the config. An empty v is ignored.
func WithVersion(v string) Option {
	return optionFunc(func(o *options) {
		if v != "" {
			o.version = v
		}
	})
}

// WithSource sets the source recorded in the table ([Table.Source]). The
// sources set their own. An empty name is ignored.
func WithSource(name string) Option {
	return optionFunc(func(o *options) {
		if name != "" {
			o.source = name
		}
	})
}

// WithOnUpdate has a source call fn with each table it publishes, the
// first included, after it is published. Calls are made one at a time
// from the goroutine that made the update; fn may read the source
// (Table, Status) but must not update it.
// A nil fn is ignored.
func WithOnUpdate(fn func(*Table)) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.onUpdate = fn
		}
	})
}

// WithOnReject has a source call fn with each update it refuses (to log
// it, count it in a metric), one at a time, from the goroutine that made
// the update; fn may read the source (Table, Status) but must not update
// it. A nil fn is ignored.
func WithOnReject(fn func(Rejection)) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.onReject = fn
		}
	})
}

// WithOnWarning has a source call fn once with each warning of the
// tables it publishes ([Table.Warnings]: a field it does not apply, a
// route that never matches): when a table brings the warning (same path
// and message) that the table before it did not have. A warning that
// stays from table to table is reported once; one that goes away and
// comes back is reported again. Calls are made as for [WithOnUpdate],
// before it. A nil fn is ignored.
func WithOnWarning(fn func(source string, w *FieldError)) Option {
	return optionFunc(func(o *options) {
		if fn != nil {
			o.onWarn = fn
		}
	})
}

// WithClock sets the clock a source stamps updates and rejections with.
// A nil now is ignored.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// WithPollInterval sets how often [File.Run] reads the file; a
// non-positive d is ignored.
func WithPollInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.poll = d
		}
	})
}
