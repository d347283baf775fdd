package tlsid

import "time"

// Option configures several constructors of this package at once:
// [NewDevCA], [ServerConfig], [ClientConfig], [NewFileSource] and
// [NewConsulSource] each take the options that concern them.
type Option interface {
	DevCAOption
	ConfigOption
	FileOption
	ConsulOption
}

// DevCAOption configures a [DevCA].
type DevCAOption interface{ applyDevCA(*DevCA) }

// ConfigOption configures [ServerConfig] and [ClientConfig].
type ConfigOption interface{ applyConfig(*configOptions) }

// FileOption configures a [FileSource].
type FileOption interface{ applyFile(*FileSource) }

// ConsulOption configures a [ConsulSource], [ConsulIntentions],
// [ConsulIntentionsWatch] or [CompileIntentions].
type ConsulOption interface{ applyConsul(*consulOptions) }

type devCAOptionFunc func(*DevCA)

func (f devCAOptionFunc) applyDevCA(ca *DevCA) { f(ca) }

type fileOptionFunc func(*FileSource)

func (f fileOptionFunc) applyFile(s *FileSource) { f(s) }

type consulOptionFunc func(*consulOptions)

func (f consulOptionFunc) applyConsul(o *consulOptions) { f(o) }

type configOptions struct {
	now func() time.Time
}

type clockOption struct{ now func() time.Time }

func (o clockOption) applyDevCA(ca *DevCA) {
	if o.now != nil {
		ca.now = o.now
	}
}

func (o clockOption) applyConfig(c *configOptions) {
	if o.now != nil {
		c.now = o.now
	}
}

func (o clockOption) applyFile(s *FileSource) {
	if o.now != nil {
		s.now = o.now
	}
}

func (o clockOption) applyConsul(c *consulOptions) {
	if o.now != nil {
		c.now = o.now
	}
}

// WithClock sets the clock read to date certificates, decide renewals,
// check validity periods and expire caches. The default is [time.Now].
// A nil clock is ignored.
func WithClock(now func() time.Time) Option { return clockOption{now: now} }

// WithSVIDTTL sets the lifetime of the SVIDs a [DevCA] issues; the default
// is [DefaultSVIDTTL]. Values ≤ 0 are ignored.
func WithSVIDTTL(ttl time.Duration) DevCAOption {
	return devCAOptionFunc(func(ca *DevCA) {
		if ttl > 0 {
			ca.ttl = ttl
		}
	})
}
