package tlsid

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrBadIntention reports a service-intentions config entry that cannot
// be compiled: an unknown action, a source with both an action and
// permissions or neither, a malformed path, method, header match or
// regular expression. The error names the entry and the field.
var ErrBadIntention = errors.New("tlsid: bad Consul intention")

// ErrNoIntentions is wrapped by the error of a [ConsulIntentionsWatch]
// that has not compiled a first set of intentions yet: it refuses every
// request (as unavailable, not as denied) until it has.
var ErrNoIntentions = errors.New("tlsid: no Consul intentions yet")

// IntentionWarning names a field of a service-intentions config entry
// that weft does not apply as Consul's proxies would, and what weft does
// instead. What weft does instead never allows a request the entry
// would refuse: a field it cannot check turns the allows it governs into
// denies, or is ignored only where it cannot match a caller weft admits.
// It is plain, comparable data.
type IntentionWarning struct {
	// Entry is the entry's Name: the destination service, or "*".
	Entry string
	// Field is the path of the field in the entry, such as
	// "Sources[web].Permissions[0].JWT".
	Field string
	// Reason says why weft cannot apply the field and what it does.
	Reason string
}

// String returns the warning as one line naming the entry and field.
func (w IntentionWarning) String() string {
	return fmt.Sprintf("service-intentions %q: %s: %s", w.Entry, w.Field, w.Reason)
}

// Intentions are Consul's service intentions for one destination
// service, compiled by [CompileIntentions] into a [RequestPolicy]. A
// request is decided by the one intention source that names its caller
// with the highest precedence, as Consul's proxies decide it:
//
//  1. the entry of the destination, source of the caller's name (Consul's
//     precedence 9);
//  2. the entry of the destination, source "*" (8);
//  3. the entry "*" (every destination), source of the caller's name (6);
//  4. the entry "*", source "*" (5).
//
// A source with an Action allows or denies every request of its callers
// (an L4 intention). A source with Permissions (an L7 intention) applies
// the first permission whose HTTP match fits the request — path
// (PathExact, PathPrefix, PathRegex), methods, headers — and denies a
// request no permission matches. A request whose caller no source names
// gets the default: deny, unless [WithIntentionsDefault] says allow
// (Consul takes it from the ACL default policy).
//
// The caller's service name comes from its SPIFFE ID in Consul's Connect
// form, spiffe://<trust domain>/ns/default/dc/<dc>/svc/<name>; callers
// without an ID, of another trust domain, of another namespace or
// partition, or with another form of ID are denied whatever the
// intentions say.
//
// Matching follows Envoy's, which Consul's proxies use: PathExact and
// PathPrefix compare the request's normalized path ([NormalizePath])
// exactly and as a plain string prefix ("/admin" is a prefix of
// "/administrator"); regular expressions are RE2 and must match the
// whole path or header value; a header with several values is matched
// against the values joined with ","; an absent header matches only
// "Present" with "Invert"; a request without a path (CONNECT) matches
// no path condition, and "*" (OPTIONS *) only a regular expression.
//
// Where weft sees a request differently from Envoy, or an application
// may read it differently, a permission that denies matches at least
// whenever Envoy's would, and one that allows at most then:
//
//   - paths are matched in weft's normalized form and, when the request
//     gives its escaped path ([Request].EscapedPath), in the forms
//     Consul's proxies may see (Envoy's normalize_path, which keeps
//     "%2F" and "//"; with slashes merged; with upper-case hex): a deny
//     written for "%2F" or "//" still denies, and an allow must match
//     every form;
//   - a permission naming the method GET also matches HEAD, as servers
//     answer HEAD with their GET handlers (as [Policy] does);
//   - a deny's methods, and its values of the header ":method", match
//     whatever their case ("delete" is DELETE); an allow's only as
//     written;
//   - a header sent several times also matches a deny when one of its
//     values alone does, and an allow only when each of them does too;
//     values with leading or trailing spaces or tabs are read both with
//     and without them, in the same way;
//   - "." in a regular expression also matches a newline, which a
//     decoded path may hold ("%0A");
//   - headers a request's [Headers] may not give — pseudo-headers
//     other than ":authority" and ":method", those gRPC servers consume
//     (te, grpc-timeout, grpc-encoding, grpc-message, grpc-message-type,
//     grpc-status) and those net/http consumes (transfer-encoding,
//     trailer) — and the values of binary
//     ("-bin") headers, which gRPC servers see decoded, make an allow
//     never match and a deny match whatever the value (a "-bin" header
//     must still be present); each is reported in [Intentions.Warnings].
//
// gRPC calls are method POST on the path "/package.Service/Method",
// with their metadata as headers.
//
// The zero value refuses every request with an error wrapping
// [ErrNoIntentions]. Intentions are immutable and
// safe for concurrent use; deciding a request does not allocate, unless
// a header match reads a header sent several times or the request was
// sent with a path other than its normalized one.
type Intentions struct {
	td           spiffeid.TrustDomain
	target       string
	defaultAllow bool
	// dest[0] is the entry of the target, dest[1] the entry "*".
	dest     [2]sourceSet
	warnings []IntentionWarning

	defaultErr, foreignErr error
}

type sourceSet struct {
	byName map[string]*intentionSource
	any    *intentionSource // the source "*"
}

// intentionSource is one compiled source of an entry.
type intentionSource struct {
	allow bool // an L4 intention that allows
	l7    bool // decided by perms
	perms []intentionPermission
	err   error // the denial of an L4 deny
	noErr error // the denial when no permission matches
}

type intentionPermission struct {
	allow      bool
	pathExact  string
	pathPrefix string
	pathRe     *regexp.Regexp
	methods    []string
	headers    []headerMatch
	err        error // the denial when a deny permission matches
}

type headerKind uint8

const (
	headerPresent headerKind = iota
	headerExact
	headerPrefix
	headerSuffix
	headerContains
	headerRegex
)

type headerMatch struct {
	name       string
	kind       headerKind
	value      string // lowercased when ignoreCase, for contains
	re         *regexp.Regexp
	invert     bool
	ignoreCase bool
}

// intentionsConfig is what [CompileIntentions] reads of its options.
type intentionsConfig struct {
	defaultAllow bool
}

// CompileIntentions compiles the service-intentions config entries that
// concern target — the entry named target and the entry named "*" — into
// the [Intentions] of target in the Consul cluster of trust domain td.
// Entries of other destinations, of another kind and nil entries are
// skipped, so the list Consul returns for the kind
// (api.ConfigEntries.List of api.ServiceIntentions) can be passed as is.
// It reads [WithIntentionsDefault].
//
// It fails with [ErrBadIntention], naming the entry and the field, on
// the first field it cannot compile; nothing of the entries is then
// applied. Fields weft does not apply as Consul would become warnings
// ([Intentions.Warnings]); see [IntentionWarning].
func CompileIntentions(td spiffeid.TrustDomain, target string, entries []api.ConfigEntry, opts ...ConsulOption) (*Intentions, error) {
	o := newConsulOptions(opts)
	return compileIntentions(td, target, entries, intentionsConfig{defaultAllow: o.defaultAllow})
}

func compileIntentions(td spiffeid.TrustDomain, target string, entries []api.ConfigEntry, cfg intentionsConfig) (*Intentions, error) {
	if td.IsZero() {
		return nil, fmt.Errorf("%w: no trust domain", ErrBadIntention)
	}
	if err := spiffeid.ValidatePathSegment(target); err != nil || target == "*" {
		return nil, fmt.Errorf("%w: bad destination service %q", ErrBadIntention, truncate(target))
	}
	in := &Intentions{td: td, target: target, defaultAllow: cfg.defaultAllow}
	seen := [2]bool{}
	for _, e := range entries {
		si, ok := e.(*api.ServiceIntentionsConfigEntry)
		if !ok || si == nil {
			continue
		}
		slot := -1
		switch si.Name {
		case target:
			slot = 0
		case "*":
			slot = 1
		}
		if slot < 0 {
			continue
		}
		c := entryCompiler{in: in, entry: si}
		set, ok, err := c.compile()
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if seen[slot] {
			return nil, fmt.Errorf("%w: service-intentions %q: two entries for one destination", ErrBadIntention, truncate(si.Name))
		}
		seen[slot] = true
		in.dest[slot] = set
	}
	if cfg.defaultAllow {
		in.defaultErr = nil
	} else {
		in.defaultErr = fmt.Errorf("%w: no Consul intention names the caller, and the default is deny", ErrUnauthorized)
	}
	in.foreignErr = fmt.Errorf("%w: the caller's ID is not a Consul service ID of trust domain %s, namespace default", ErrUnauthorized, td)
	return in, nil
}

// entryCompiler compiles one entry, collecting its warnings in in.
type entryCompiler struct {
	in    *Intentions
	entry *api.ServiceIntentionsConfigEntry
	// failClosed: the entry needs what weft cannot check for every allow
	// in it (a JWT, a wildcard namespace); the allows deny instead.
	failClosed string
}

func (c *entryCompiler) warn(field, reason string) {
	c.in.warnings = append(c.in.warnings, IntentionWarning{Entry: c.entry.Name, Field: field, Reason: reason})
}

func (c *entryCompiler) errorf(field, format string, args ...any) error {
	return fmt.Errorf("%w: service-intentions %q: %s: %s", ErrBadIntention, truncate(c.entry.Name), field, fmt.Sprintf(format, args...))
}

// defaultScope reports whether a namespace or partition is the default one.
func defaultScope(s string) bool { return s == "" || s == "default" }

// compile returns the entry's sources; ok is false when the entry is
// ignored as a whole.
func (c *entryCompiler) compile() (set sourceSet, ok bool, err error) {
	e := c.entry
	for _, f := range []struct{ field, v string }{{"Namespace", e.Namespace}, {"Partition", e.Partition}} {
		switch {
		case defaultScope(f.v):
		case f.v == "*":
			c.failClosed = f.field + " " + f.v
			c.warn(f.field, "weft serves the default namespace and partition only; the entry applies, and each allow in it denies")
		default:
			c.warn(f.field, fmt.Sprintf("the entry is for %s %q, not the default one weft serves: ignored", strings.ToLower(f.field), truncate(f.v)))
			return set, false, nil
		}
	}
	if e.JWT != nil && len(e.JWT.Providers) > 0 {
		c.failClosed = "a JWT"
		c.warn("JWT", "weft does not verify JWTs: each allow of the entry denies")
	}
	set.byName = make(map[string]*intentionSource, len(e.Sources))
	for i, s := range e.Sources {
		if s == nil {
			continue
		}
		field := fmt.Sprintf("Sources[%d]", i)
		if s.Name != "" {
			field = fmt.Sprintf("Sources[%s]", truncate(s.Name))
		}
		src, use, err := c.source(field, s)
		if err != nil {
			return set, false, err
		}
		if !use {
			continue
		}
		if s.Name == "*" {
			if set.any != nil {
				return set, false, c.errorf(field, "the source is listed twice")
			}
			set.any = src
			continue
		}
		if set.byName[s.Name] != nil {
			return set, false, c.errorf(field, "the source is listed twice")
		}
		set.byName[s.Name] = src
	}
	return set, true, nil
}

func (c *entryCompiler) source(field string, s *api.SourceIntention) (*intentionSource, bool, error) {
	if s.Name != "*" {
		if err := spiffeid.ValidatePathSegment(s.Name); err != nil {
			return nil, false, c.errorf(field+".Name", "%q is not a service name", truncate(s.Name))
		}
	}
	if s.Peer != "" {
		c.warn(field+".Peer", "callers of peered clusters are not callers weft admits (their IDs are of another trust domain): ignored")
		return nil, false, nil
	}
	failClosed := c.failClosed
	for _, f := range []struct{ field, v string }{{"Namespace", s.Namespace}, {"Partition", s.Partition}} {
		switch {
		case defaultScope(f.v):
		case f.v == "*":
			failClosed = f.field + " " + f.v
			c.warn(field+"."+f.field, "weft admits callers of the default namespace and partition only: the source applies to them, and its allows deny")
		default:
			c.warn(field+"."+f.field, fmt.Sprintf("callers of %s %q are not callers weft admits: ignored", strings.ToLower(f.field), truncate(f.v)))
			return nil, false, nil
		}
	}
	if s.SamenessGroup != "" {
		failClosed = "a sameness group"
		c.warn(field+".SamenessGroup", "weft does not resolve sameness groups: the source applies to local callers of its name, and its allows deny")
	}
	name := fmt.Sprintf("%s → %s", s.Name, c.entry.Name)
	src := &intentionSource{}
	switch {
	case s.Action != "" && len(s.Permissions) > 0:
		return nil, false, c.errorf(field, "both Action and Permissions are set")
	case s.Action == api.IntentionActionAllow:
		src.allow = failClosed == ""
		src.err = fmt.Errorf("%w: Consul intention %s allows only with %s, which weft cannot check", ErrUnauthorized, name, failClosed)
	case s.Action == api.IntentionActionDeny:
		src.err = fmt.Errorf("%w: Consul intention %s denies", ErrUnauthorized, name)
	case s.Action != "":
		return nil, false, c.errorf(field+".Action", "%q is neither allow nor deny", truncate(string(s.Action)))
	case len(s.Permissions) == 0:
		return nil, false, c.errorf(field, "neither Action nor Permissions is set")
	default:
		src.l7 = true
		src.noErr = fmt.Errorf("%w: Consul intention %s: no permission matches the request", ErrUnauthorized, name)
		for i, p := range s.Permissions {
			pfield := fmt.Sprintf("%s.Permissions[%d]", field, i)
			if p == nil {
				return nil, false, c.errorf(pfield, "empty permission")
			}
			perm, use, err := c.permission(pfield, name, i, p, failClosed)
			if err != nil {
				return nil, false, err
			}
			if use {
				src.perms = append(src.perms, perm)
			}
		}
	}
	return src, true, nil
}

func (c *entryCompiler) permission(field, name string, i int, p *api.IntentionPermission, failClosed string) (intentionPermission, bool, error) {
	var perm intentionPermission
	switch p.Action {
	case api.IntentionActionAllow:
		perm.allow = failClosed == ""
		perm.err = fmt.Errorf("%w: Consul intention %s: permission %d allows only with %s, which weft cannot check", ErrUnauthorized, name, i, failClosed)
	case api.IntentionActionDeny:
		perm.err = fmt.Errorf("%w: Consul intention %s: permission %d denies the request", ErrUnauthorized, name, i)
	default:
		return perm, false, c.errorf(field+".Action", "%q is neither allow nor deny", truncate(string(p.Action)))
	}
	if p.JWT != nil && len(p.JWT.Providers) > 0 {
		if perm.allow {
			// Without the token checked the permission cannot be known
			// to match; the next permissions decide.
			c.warn(field+".JWT", "weft does not verify JWTs: this allow never matches")
			return perm, false, nil
		}
		c.warn(field+".JWT", "weft does not verify JWTs: this deny matches whatever the token")
	}
	if p.HTTP == nil {
		return perm, false, c.errorf(field+".HTTP", "missing")
	}
	h := p.HTTP
	paths := 0
	for _, v := range []string{h.PathExact, h.PathPrefix, h.PathRegex} {
		if v != "" {
			paths++
		}
	}
	if paths > 1 {
		return perm, false, c.errorf(field+".HTTP", "more than one of PathExact, PathPrefix and PathRegex")
	}
	switch {
	case h.PathExact != "":
		if h.PathExact[0] != '/' {
			return perm, false, c.errorf(field+".HTTP.PathExact", "%q does not start with /", truncate(h.PathExact))
		}
		perm.pathExact = h.PathExact
	case h.PathPrefix != "":
		if h.PathPrefix[0] != '/' {
			return perm, false, c.errorf(field+".HTTP.PathPrefix", "%q does not start with /", truncate(h.PathPrefix))
		}
		perm.pathPrefix = h.PathPrefix
	case h.PathRegex != "":
		re, err := compileWhole(h.PathRegex)
		if err != nil {
			return perm, false, c.errorf(field+".HTTP.PathRegex", "%v", err)
		}
		perm.pathRe = re
	}
	for j, m := range h.Methods {
		if !isToken(m) {
			return perm, false, c.errorf(fmt.Sprintf("%s.HTTP.Methods[%d]", field, j), "%q is not an HTTP method", truncate(m))
		}
		perm.methods = append(perm.methods, m)
	}
	if slices.Contains(perm.methods, http.MethodGet) && !slices.Contains(perm.methods, http.MethodHead) {
		perm.methods = append(perm.methods, http.MethodHead)
	}
	for j, hp := range h.Header {
		hfield := fmt.Sprintf("%s.HTTP.Header[%d]", field, j)
		hm, err := compileHeader(hp)
		if err != nil {
			return perm, false, c.errorf(hfield, "%v", err)
		}
		if unseenHeader(hm.name) {
			if perm.allow {
				c.warn(hfield+".Name", fmt.Sprintf("weft does not see the header %s: this allow never matches", truncate(hm.name)))
				return perm, false, nil
			}
			c.warn(hfield+".Name", fmt.Sprintf("weft does not see the header %s: this deny matches whatever its value", truncate(hm.name)))
			continue
		}
		if hm.name == ":method" && !perm.allow {
			// As for Methods: a server may take "delete" for DELETE.
			hm = foldCase(hm)
		}
		if hm.kind != headerPresent && strings.HasSuffix(strings.ToLower(hm.name), "-bin") {
			// gRPC servers see the decoded bytes of a binary header,
			// Consul's proxies the base64 text on the wire.
			if perm.allow {
				c.warn(hfield+".Name", fmt.Sprintf("weft cannot match the wire value of the binary header %s: this allow never matches", truncate(hm.name)))
				return perm, false, nil
			}
			c.warn(hfield+".Name", fmt.Sprintf("weft cannot match the wire value of the binary header %s: this deny matches whenever it is present", truncate(hm.name)))
			if hm.invert {
				continue
			}
			hm = headerMatch{name: hm.name, kind: headerPresent}
		}
		perm.headers = append(perm.headers, hm)
	}
	return perm, true, nil
}

// seenPseudoHeaders are the HTTP/2 pseudo-headers a request's [Headers]
// give, as package mesh builds them.
var seenPseudoHeaders = []string{":authority", ":method"}

// hiddenHeaders are headers a server consumes without giving them to the
// handler's header map, in canonical form: grpc-go's reserved headers,
// kept out of a call's metadata, and the framing headers net/http moves
// to Request.TransferEncoding and Request.Trailer.
var hiddenHeaders = []string{"Te", "Grpc-Timeout", "Grpc-Encoding", "Grpc-Message", "Grpc-Message-Type", "Grpc-Status", "Transfer-Encoding", "Trailer"}

// unseenHeader reports whether a request's [Headers] may lack the header
// name (in its compiled form) although the request carried it.
func unseenHeader(name string) bool {
	if strings.HasPrefix(name, ":") {
		return !slices.Contains(seenPseudoHeaders, name)
	}
	return slices.Contains(hiddenHeaders, name)
}

// foldCase returns hm matching its value whatever its case.
func foldCase(hm headerMatch) headerMatch {
	switch hm.kind {
	case headerPresent:
	case headerRegex:
		hm.re = regexp.MustCompile(`(?i)` + hm.re.String())
	default:
		hm.ignoreCase, hm.value = true, strings.ToLower(hm.value)
	}
	return hm
}

// compileWhole compiles an RE2 expression that must match a whole value.
// "." also matches a newline: weft matches decoded paths, in which
// "%0A" is a newline, while Envoy matches it as the three characters
// "%0A", which "." matches.
func compileWhole(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("regular expression %q: %v", truncate(expr), err)
	}
	return regexp.Compile(`^(?s:` + expr + `)$`)
}

func compileHeader(hp api.IntentionHTTPHeaderPermission) (headerMatch, error) {
	// The canonical form, so that reading an http.Header does not
	// allocate; pseudo-headers stay lowercase.
	hm := headerMatch{name: textproto.CanonicalMIMEHeaderKey(hp.Name), invert: hp.Invert, ignoreCase: hp.IgnoreCase}
	switch {
	case isToken(hp.Name):
	case strings.HasPrefix(hp.Name, ":") && isToken(hp.Name[1:]):
		hm.name = strings.ToLower(hp.Name)
	default:
		return hm, fmt.Errorf("name %q is not a header name", truncate(hp.Name))
	}
	n := 0
	if hp.Present {
		hm.kind, n = headerPresent, n+1
	}
	for _, f := range []struct {
		kind headerKind
		v    string
	}{{headerExact, hp.Exact}, {headerPrefix, hp.Prefix}, {headerSuffix, hp.Suffix}, {headerContains, hp.Contains}, {headerRegex, hp.Regex}} {
		if f.v != "" {
			hm.kind, hm.value, n = f.kind, f.v, n+1
		}
	}
	if n != 1 {
		return hm, errors.New("exactly one of Present, Exact, Prefix, Suffix, Contains and Regex must be set")
	}
	switch {
	case hm.kind == headerRegex:
		re, err := compileWhole(hm.value)
		if err != nil {
			return hm, err
		}
		hm.re = re
	case hm.ignoreCase:
		hm.value = strings.ToLower(hm.value)
	}
	return hm, nil
}

// Warnings returns the fields of the entries that weft does not apply
// as Consul would, in the order of the entries; nil when there are none.
// The caller must not modify the slice.
func (in *Intentions) Warnings() []IntentionWarning {
	if in == nil {
		return nil
	}
	return in.warnings
}

// AuthorizeRequest implements [RequestPolicy]: nil when the intentions
// allow r, an error wrapping [ErrUnauthorized] naming the intention that
// denies it.
func (in *Intentions) AuthorizeRequest(_ context.Context, r Request) error {
	if in == nil || in.td.IsZero() {
		return errNoIntentions
	}
	if r.Peer.IsZero() {
		return errNoPeer
	}
	name, ok := consulCaller(r.Peer, in.td)
	if !ok {
		return in.foreignErr
	}
	src := in.source(name)
	if src == nil {
		return in.defaultErr
	}
	return src.decide(r)
}

var (
	errNoIntentions = fmt.Errorf("%w: the intentions are not loaded", ErrNoIntentions)
	errNoPeer       = fmt.Errorf("%w: no peer ID", ErrUnauthorized)
)

// source returns the source that decides for callers of service name, in
// Consul's order of precedence; nil when none names it.
func (in *Intentions) source(name string) *intentionSource {
	for i := range in.dest {
		d := &in.dest[i]
		if s := d.byName[name]; s != nil {
			return s
		}
		if d.any != nil {
			return d.any
		}
	}
	return nil
}

// consulCaller returns the service name of a Consul Connect service ID
// of trust domain td in the default namespace and partition.
func consulCaller(id spiffeid.ID, td spiffeid.TrustDomain) (string, bool) {
	if id.TrustDomain() != td {
		return "", false
	}
	const prefix = "/ns/default/dc/"
	p := id.Path()
	if !strings.HasPrefix(p, prefix) {
		return "", false
	}
	rest := p[len(prefix):]
	i := strings.IndexByte(rest, '/')
	if i <= 0 || !strings.HasPrefix(rest[i:], "/svc/") {
		return "", false
	}
	name := rest[i+len("/svc/"):]
	if name == "" || strings.IndexByte(name, '/') >= 0 {
		return "", false
	}
	return name, true
}

func (s *intentionSource) decide(r Request) error {
	if !s.l7 {
		if s.allow {
			return nil
		}
		return s.err
	}
	p := r.Path
	if strings.HasPrefix(p, "/") {
		p = NormalizePath(p)
	}
	paths := []string{p}
	if r.EscapedPath != "" && r.EscapedPath != p && p != "" {
		paths = append(paths, envoyPaths(r.EscapedPath)...)
	}
	for i := range s.perms {
		perm := &s.perms[i]
		if !perm.matches(r.Method, paths, r.Header) {
			continue
		}
		if perm.allow {
			return nil
		}
		return perm.err
	}
	return s.noErr
}

// NormalizePath is [CleanPath] that keeps a trailing slash, the form in
// which [Intentions] match paths and package mesh gives handlers. As in
// RFC 3986 §5.2.4 (and Envoy's path normalization), a path ending in a
// "." or ".." segment names a directory: "/a/b/.." is "/a/", not "/a".
// As Envoy's normalization does, a backslash is a slash: "/a\b" is
// "/a/b". It does not allocate for a path already in that form.
func NormalizePath(p string) string {
	if strings.IndexByte(p, '\\') >= 0 {
		p = strings.ReplaceAll(p, `\`, "/")
	}
	c := CleanPath(p)
	if c == "/" || !endsInDir(p) {
		return c
	}
	if len(p) == len(c)+1 && p[:len(c)] == c {
		return p
	}
	return c + "/"
}

// endsInDir reports whether the last segment of p is empty, "." or "..".
func endsInDir(p string) bool {
	last := p[strings.LastIndexByte(p, '/')+1:]
	return last == "" || last == "." || last == ".."
}

// matches reports whether the permission matches a request. paths are
// the forms of its path: the normalized one first, then those Consul's
// proxies may see (see envoyPaths).
func (p *intentionPermission) matches(method string, paths []string, h Headers) bool {
	// A denying permission (a deny, or an allow weft cannot check) must
	// match at least whenever Consul's proxies would match it, an
	// allowing one at most then: method case, the forms of the path and
	// the values of a header sent several times are read both ways.
	denying := !p.allow
	if p.pathExact != "" || p.pathPrefix != "" || p.pathRe != nil {
		if paths[0] == "" {
			// No path (CONNECT): Envoy's path matchers do not match.
			return false
		}
		ok := p.matchPath(paths[0])
		for _, q := range paths[1:] {
			if p.matchPath(q) == denying {
				ok = denying
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(p.methods) > 0 && !p.matchMethod(method, denying) {
		return false
	}
	for i := range p.headers {
		if !p.headers[i].matches(h, denying) {
			return false
		}
	}
	return true
}

// matchPath reports whether the permission's path condition holds for
// one form of the request's path.
func (p *intentionPermission) matchPath(reqPath string) bool {
	switch {
	case p.pathExact != "":
		return reqPath == p.pathExact
	case p.pathPrefix != "":
		return strings.HasPrefix(reqPath, p.pathPrefix)
	case p.pathRe != nil:
		return p.pathRe.MatchString(reqPath)
	}
	return true
}

// envoyPaths returns the forms in which Consul's proxies may match an
// escaped request path, other than weft's: Envoy's normalize_path
// (backslashes made slashes, percent-encodings of unreserved characters
// decoded, dot segments resolved; "%2F" and runs of slashes kept), that
// form with runs of slashes merged (Consul's MergeSlashes), and both with
// the hex digits of the remaining percent-encodings in upper case.
func envoyPaths(escaped string) []string {
	base := removeDotSegments(decodeUnreserved(strings.ReplaceAll(escaped, `\`, "/")))
	forms := []string{base}
	add := func(f string) {
		if !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	merged := mergeSlashes(base)
	add(merged)
	add(upperEscapes(base))
	add(upperEscapes(merged))
	return forms
}

// decodeUnreserved decodes the percent-encodings of RFC 3986's
// unreserved characters (letters, digits, "-", ".", "_", "~").
func decodeUnreserved(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// upperEscapes returns s with the hex digits of its percent-encodings
// in upper case.
func upperEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' && isHex(b[i+1]) && isHex(b[i+2]) {
			b[i+1], b[i+2] = upperHex(b[i+1]), upperHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// removeDotSegments resolves the "." and ".." segments of a path as RFC
// 3986 §5.2.4 does, keeping empty segments; a path that does not start
// with "/" is returned as is.
func removeDotSegments(p string) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// mergeSlashes replaces each run of slashes in p with one.
func mergeSlashes(p string) string {
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	return p
}

// matchMethod reports whether method is one of the permission's. A
// denying permission ignores case: a server may read "delete" as DELETE,
// while Consul's proxies reject a lower-case method outright.
func (p *intentionPermission) matchMethod(method string, denying bool) bool {
	for _, m := range p.methods {
		if m == method || denying && strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

// matches reports whether the header condition holds. As in Envoy, a
// header sent several times is matched by its values joined with ",";
// an application, though, may read only one of them, so a denying
// permission also matches when one value alone does, and an allowing
// one only when each value does too (and see matchValue).
func (m *headerMatch) matches(h Headers, denying bool) bool {
	var vals []string
	if h != nil {
		vals = h.Values(m.name)
	}
	if len(vals) == 0 {
		return m.kind == headerPresent && m.invert
	}
	if len(vals) == 1 {
		return m.matchValue(vals[0], denying)
	}
	if m.matchValue(strings.Join(vals, ","), denying) == denying {
		return denying
	}
	for _, v := range vals {
		if m.matchValue(v, denying) == denying {
			return denying
		}
	}
	return !denying
}

// matchValue reports whether the condition holds for one value. A
// value with leading or trailing spaces or tabs (which HTTP/1.1 servers
// strip, and HTTP/2 proxies may refuse) is read both with and without
// them: a denying permission matches if either does, an allowing one if
// both do.
func (m *headerMatch) matchValue(v string, denying bool) bool {
	t := strings.Trim(v, " \t")
	if len(t) == len(v) {
		return m.matchOne(v)
	}
	if m.matchOne(v) == denying {
		return denying
	}
	return m.matchOne(t)
}

// matchOne reports whether the condition holds for the value v as is.
func (m *headerMatch) matchOne(v string) bool {
	var ok bool
	switch m.kind {
	case headerPresent:
		ok = true
	case headerExact:
		ok = v == m.value || m.ignoreCase && strings.EqualFold(v, m.value)
	case headerPrefix:
		ok = strings.HasPrefix(v, m.value) || m.ignoreCase && len(v) >= len(m.value) && strings.EqualFold(v[:len(m.value)], m.value)
	case headerSuffix:
		ok = strings.HasSuffix(v, m.value) || m.ignoreCase && len(v) >= len(m.value) && strings.EqualFold(v[len(v)-len(m.value):], m.value)
	case headerContains:
		if m.ignoreCase {
			ok = strings.Contains(strings.ToLower(v), m.value)
		} else {
			ok = strings.Contains(v, m.value)
		}
	case headerRegex:
		ok = m.re.MatchString(v)
	}
	return ok != m.invert
}
