package route_test

import (
	"errors"
	"regexp/syntax"
	"strings"
	"testing"

	"github.com/weftmesh/weft/route"
)

// base is a valid service the bad configs below change one thing of.
const base = `
services:
  payments:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: v1}}
      v2: {meta: {version: v2}}
    routes:
`

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string // of the error
		msg  string // part of its message
	}{
		{"bad regex", base + `
      - match: [{headers: {x-canary: {regex: "(a"}}}]`,
			`services.payments.routes[0].match[0].headers["x-canary"].regex`, "error parsing regexp: missing closing ): `(a`"},
		{"bad path regex", base + `
      - match: [{path: {regex: "/a[z-a]"}}]`,
			`services.payments.routes[0].match[0].path.regex`, "invalid character class range"},
		{"weights do not sum", base + `
      - backends: [{subset: v1, weight: 9000}, {subset: v2, weight: 900}]`,
			`services.payments.routes[0].backends`, "weights sum to 9900, not 10000"},
		{"negative weight", base + `
      - backends: [{subset: v1, weight: -1}, {subset: v2, weight: 10001}]`,
			`services.payments.routes[0].backends[0].weight`, "-1 is outside 0–10000"},
		{"weight above total", base + `
      - backends: [{subset: v1, weight: 0}, {subset: v2, weight: 10001}]`,
			`services.payments.routes[0].backends[1].weight`, "10001 is outside 0–10000"},
		{"unknown subset", base + `
      - backends: [{subset: v3}]`,
			`services.payments.routes[0].backends[0].subset`, `unknown subset "v3" of "payments" (subsets: v1, v2)`},
		{"unknown default subset", `
services:
  web: {defaultSubset: blue}`,
			`services.web.defaultSubset`, `unknown subset "blue" (the service has no subsets)`},
		{"subset of an undeclared service", base + `
      - backends: [{service: ledger, subset: v1}]`,
			`services.payments.routes[0].backends[0].subset`, `service "ledger" is not in services`},
		{"subset of an external service", base + `
      - backends: [{service: bank, subset: v1}]
external:
  bank: {endpoints: ["192.0.2.1:443"]}`,
			`services.payments.routes[0].backends[0].subset`, `external service "bank" has no subsets`},
		{"redirect on gRPC", `
services:
  echo:
    protocol: grpc
    routes:
      - redirect: {path: /x}`,
			`services.echo.routes[0].redirect`, "a gRPC service cannot redirect"},
		{"direct response on gRPC", `
services:
  echo:
    protocol: grpc
    routes:
      - directResponse: {status: 404}`,
			`services.echo.routes[0].directResponse`, "cannot answer with a direct response"},
		{"method on gRPC", `
services:
  echo:
    protocol: grpc
    routes:
      - match: [{methods: [POST]}]`,
			`services.echo.routes[0].match[0].methods`, "gRPC calls have no method"},
		{"query on gRPC", `
services:
  echo:
    protocol: grpc
    routes:
      - match: [{query: {a: {exact: b}}}]`,
			`services.echo.routes[0].match[0].query`, "gRPC calls have no query"},
		{"HTTP abort on gRPC", `
services:
  echo:
    protocol: grpc
    routes:
      - fault: {abort: {httpStatus: 503, percent: 5}}`,
			`services.echo.routes[0].fault.abort.httpStatus`, "aborts with grpcStatus"},
		{"fault percent above 100", base + `
      - fault: {abort: {httpStatus: 503, percent: 100.5}}`,
			`services.payments.routes[0].fault.abort.percent`, "100.5 is outside 0–100"},
		{"delay percent below 0", base + `
      - fault: {delay: {fixed: 1s, percent: -1}}`,
			`services.payments.routes[0].fault.delay.percent`, "-1 is outside 0–100"},
		{"mirror percent", base + `
      - mirror: {subset: v2, percent: 101}`,
			`services.payments.routes[0].mirror.percent`, "101 is outside 0–100"},
		{"mirror unknown subset", base + `
      - mirror: {subset: v9, percent: 1}`,
			`services.payments.routes[0].mirror.subset`, `unknown subset "v9"`},
		{"rewrite without a path match", base + `
      - match: [{headers: {x-a: {present: true}}}]
        rewrite: {path: /v2/}`,
			`services.payments.routes[0].rewrite.path`, "a path rewrite needs every match entry to match the path by exact or prefix; match[0] does not"},
		{"rewrite with no match at all", base + `
      - rewrite: {path: /v2/}`,
			`services.payments.routes[0].rewrite.path`, "the route has no match entries"},
		{"rewrite of a regex match", base + `
      - match: [{path: {regex: "/a.*"}}]
        rewrite: {path: /b}`,
			`services.payments.routes[0].rewrite.path`, "match[0] does not"},
		{"rewrite with a redirect", base + `
      - match: [{path: {prefix: /a}}]
        redirect: {path: /b}
        rewrite: {path: /c}`,
			`services.payments.routes[0].rewrite`, "sends nothing to rewrite"},
		{"bad rewrite regex", base + `
      - rewrite: {regex: {pattern: "(", substitution: x}}`,
			`services.payments.routes[0].rewrite.regex.pattern`, "missing closing )"},
		{"two path kinds", base + `
      - match: [{path: {exact: /a, prefix: /a}}]`,
			`services.payments.routes[0].match[0].path`, "only one of exact, prefix and regex"},
		{"no path kind", base + `
      - match: [{path: {ignoreCase: true}}]`,
			`services.payments.routes[0].match[0].path`, "one of exact, prefix and regex is required"},
		{"path without slash", base + `
      - match: [{path: {prefix: api}}]`,
			`services.payments.routes[0].match[0].path.prefix`, `"api" does not start with /`},
		{"header match with nothing", base + `
      - match: [{headers: {x-a: {invert: true}}}]`,
			`services.payments.routes[0].match[0].headers["x-a"]`, "one of exact, prefix, suffix, regex and present is required"},
		{"header match with two", base + `
      - match: [{headers: {x-a: {exact: a, suffix: b}}}]`,
			`services.payments.routes[0].match[0].headers["x-a"]`, "only one of"},
		{"bad header name", base + `
      - match: [{headers: {"x a": {exact: a}}}]`,
			`services.payments.routes[0].match[0].headers["x a"]`, "not a valid header name"},
		{"pseudo header", base + `
      - match: [{headers: {":authority": {exact: a}}}]`,
			`services.payments.routes[0].match[0].headers[":authority"]`, "cannot be matched or changed here"},
		{"bad method", base + `
      - match: [{methods: ["GE T"]}]`,
			`services.payments.routes[0].match[0].methods[0]`, "not an HTTP method"},
		{"two actions", base + `
      - backends: [{subset: v1}]
        directResponse: {status: 200}`,
			`services.payments.routes[0]`, "only one of backends, redirect and directResponse"},
		{"redirect code", base + `
      - redirect: {path: /b, code: 200}`,
			`services.payments.routes[0].redirect.code`, "200: must be 301, 302, 303, 307 or 308"},
		{"redirect to itself", base + `
      - redirect: {code: 302}`,
			`services.payments.routes[0].redirect`, "would redirect to itself"},
		{"redirect authority", base + `
      - redirect: {authority: "a/b"}`,
			`services.payments.routes[0].redirect.authority`, `"a/b" is not a host or host:port`},
		{"redirect scheme", base + `
      - redirect: {scheme: ftp}`,
			`services.payments.routes[0].redirect.scheme`, `"ftp": must be http or https`},
		{"direct response status", base + `
      - directResponse: {status: 700}`,
			`services.payments.routes[0].directResponse.status`, "700: must be 200–599"},
		{"negative timeout", base + `
      - timeout: -1s`,
			`services.payments.routes[0].timeout`, "-1s is negative"},
		{"too many attempts", base + `
      - retries: {attempts: 11}`,
			`services.payments.routes[0].retries.attempts`, "11 is outside 0–10"},
		{"unknown retry condition", base + `
      - retries: {attempts: 1, retryOn: [5xx, sometimes]}`,
			`services.payments.routes[0].retries.retryOn[1]`, `unknown condition "sometimes"`},
		{"retry status out of range", base + `
      - retries: {attempts: 1, retryOn: ["700"]}`,
			`services.payments.routes[0].retries.retryOn[0]`, `unknown condition "700"`},
		{"abort with both", base + `
      - fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE, percent: 1}}`,
			`services.payments.routes[0].fault.abort`, "exactly one of httpStatus and grpcStatus"},
		{"abort with an unknown code", base + `
      - fault: {abort: {grpcStatus: SLEEPY, percent: 1}}`,
			`services.payments.routes[0].fault.abort.grpcStatus`, `"SLEEPY" is not a gRPC error code`},
		{"abort with OK", base + `
      - fault: {abort: {grpcStatus: OK, percent: 1}}`,
			`services.payments.routes[0].fault.abort.grpcStatus`, "not a gRPC error code"},
		{"abort status", base + `
      - fault: {abort: {httpStatus: 99, percent: 1}}`,
			`services.payments.routes[0].fault.abort.httpStatus`, "99: must be 200–599"},
		{"empty fault", base + `
      - fault: {maxActive: 3}`,
			`services.payments.routes[0].fault`, "neither delay nor abort"},
		{"zero delay", base + `
      - fault: {delay: {fixed: 0s, percent: 10}}`,
			`services.payments.routes[0].fault.delay.fixed`, "must be positive"},
		{"empty route", base + `
      - null`,
			`services.payments.routes[0]`, "empty route"},
		{"subset selecting everything", `
services:
  web:
    subsets: {all: {}}`,
			`services.web.subsets.all`, "a subset needs tags, meta or a filter"},
		{"bad service name", `
services:
  "pay ments": {}`,
			`services["pay ments"]`, "not a valid service name"},
		{"unknown protocol", `
services:
  web: {protocol: tcp}`,
			`services.web.protocol`, `"tcp": must be http, grpc or empty`},
		{"unknown balancer", `
services:
  web: {trafficPolicy: {loadBalancer: {policy: fastest}}}`,
			`services.web.trafficPolicy.loadBalancer.policy`, `unknown policy "fastest"`},
		{"hash without key", `
services:
  web: {trafficPolicy: {loadBalancer: {policy: ring_hash}}}`,
			`services.web.trafficPolicy.loadBalancer`, "ring_hash needs exactly one of hashHeader, hashCookie and hashQuery"},
		{"hash on a header and a query parameter", `
services:
  web: {trafficPolicy: {loadBalancer: {policy: maglev, hashHeader: x-user, hashQuery: user}}}`,
			`services.web.trafficPolicy.loadBalancer`, "maglev needs exactly one of hashHeader, hashCookie and hashQuery"},
		{"query hash without a hashing policy", `
services:
  web: {trafficPolicy: {loadBalancer: {policy: round_robin, hashQuery: user}}}`,
			`services.web.trafficPolicy.loadBalancer`, "only for ring_hash and maglev, not round_robin"},
		{"negative connect timeout", `
services:
  web: {trafficPolicy: {connectionPool: {connectTimeout: -1s}}}`,
			`services.web.trafficPolicy.connectionPool.connectTimeout`, "-1s is negative"},
		{"subset policy", `
services:
  web:
    subsets:
      v1: {tags: [v1], trafficPolicy: {outlierDetection: {maxEjectedPercent: 150}}}`,
			`services.web.subsets.v1.trafficPolicy.outlierDetection.maxEjectedPercent`, "150 is outside 0–100"},
		{"breaker ratio", `
services:
  web: {trafficPolicy: {breaker: {failureRatio: -0.5}}}`,
			`services.web.trafficPolicy.breaker.failureRatio`, "must be in [0, 1]"},
		{"negative max requests", `
services:
  web: {trafficPolicy: {connectionPool: {maxRequests: -1}}}`,
			`services.web.trafficPolicy.connectionPool.maxRequests`, "-1 is negative"},
		{"negative max connections", `
services:
  web:
    subsets:
      v1: {tags: [v1], trafficPolicy: {connectionPool: {maxConnections: -2}}}`,
			`services.web.subsets.v1.trafficPolicy.connectionPool.maxConnections`, "-2 is negative"},
		{"negative max pending", `
services:
  web: {trafficPolicy: {connectionPool: {maxConnections: 1, maxPendingRequests: -3}}}`,
			`services.web.trafficPolicy.connectionPool.maxPendingRequests`, "-3 is negative"},
		{"header value", base + `
      - headers: {request: {set: {x-a: "a\nb"}}}`,
			`services.payments.routes[0].headers.request.set["x-a"]`, "not a valid header value"},
		{"backend header name", base + `
      - backends: [{subset: v1, headers: {response: {remove: ["bad header"]}}}]`,
			`services.payments.routes[0].backends[0].headers.response.remove`, "not a valid header name"},
		{"external static with a name", `
external:
  bank: {endpoints: ["bank.example.com:443"]}`,
			`external.bank.endpoints[0]`, "static resolution needs an IP address"},
		{"external bad address", `
external:
  bank: {endpoints: ["192.0.2.1"], resolution: dns}`,
			`external.bank.endpoints[0]`, "not a host:port address"},
		{"external without endpoints", `
external:
  bank: {resolution: dns}`,
			`external.bank.endpoints`, "needs at least one host:port"},
		{"external name clash", `
services:
  bank: {}
external:
  bank: {endpoints: ["192.0.2.1:443"]}`,
			`external.bank`, "also in services"},
		{"empty match entry", base + `
      - match: [null]`,
			`services.payments.routes[0].match[0]`, "empty match entry"},
		{"failover to an unknown subset", `
services:
  web:
    subsets: {v1: {meta: {version: "1"}}}
    failover: [{subset: v9}]`,
			`services.web.failover[0].subset`, `unknown subset "v9" of "web" (subsets: v1)`},
		{"failover to a subset of an undeclared service", `
services:
  web:
    failover: [{service: backup, subset: v1}]`,
			`services.web.failover[0].subset`, `service "backup" is not in services`},
		{"failover to an external service", `
services:
  web:
    failover: [{service: bank}]
external:
  bank: {endpoints: ["192.0.2.1:443"]}`,
			`services.web.failover[0].service`, `external service "bank" cannot be a failover target`},
		{"failover to itself", `
services:
  web:
    subsets: {v1: {meta: {version: "1"}, failover: [{subset: v1}]}}`,
			`services.web.subsets.v1.failover[0]`, "fails over to itself"},
		{"failover to itself by the default subset", `
services:
  web:
    defaultSubset: v1
    subsets: {v1: {meta: {version: "1"}, failover: [{}]}}`,
			`services.web.subsets.v1.failover[0]`, "fails over to itself"},
		{"failover datacenter", `
services:
  web:
    failover: [{datacenter: "dc 2"}]`,
			`services.web.failover[0].datacenter`, "not a valid datacenter name"},
		{"empty failover target", `
services:
  web:
    failover: [null]`,
			`services.web.failover[0]`, "empty failover target"},
		{"bad failover service", `
services:
  web:
    failover: [{service: "a/b"}]`,
			`services.web.failover[0].service`, "not a valid service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.yaml)
			_, err := route.Validate(cfg)
			tab, cerr := route.Compile(cfg)
			if tab != nil || cerr == nil || err == nil {
				t.Fatalf("accepted: Validate %v, Compile %v", err, cerr)
			}
			if err.Error() != cerr.Error() {
				t.Errorf("Validate and Compile disagree:\n%v\n%v", err, cerr)
			}
			var ve *route.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, route.ErrInvalid) {
				t.Fatalf("error %T %v is not a *ValidationError", err, err)
			}
			for _, fe := range ve.Errors {
				if fe.Path == tt.path && strings.Contains(fe.Message, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s containing %q; got:\n%v", tt.path, tt.msg, err)
		})
	}
}

// TestOneErrorPerProblem: a problem is reported once, where it is, not
// again at every place that depends on it.
func TestOneErrorPerProblem(t *testing.T) {
	_, err := route.Validate(mustParse(t, `
services:
  web:
    defaultSubset: blue
    subsets: {green: null}
    routes:
      - timeout: 1s
      - backends: [{subset: green}]
      - mirror: {percent: 5}
`))
	var ve *route.ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 2 ||
		ve.Errors[0].Path != "services.web.subsets.green" || ve.Errors[1].Path != "services.web.defaultSubset" {
		t.Fatalf("want one error for the subset and one for the default subset; got %v", err)
	}
}

func TestValidateCollectsEveryProblem(t *testing.T) {
	cfg := mustParse(t, base+`
      - match: [{path: {regex: "(a"}}, {headers: {x-b: {regex: "[z-a]"}}}]
        backends: [{subset: v3, weight: 5000}, {subset: v2, weight: 4000}]
        fault: {abort: {httpStatus: 503, percent: 200}}
`)
	_, err := route.Validate(cfg)
	var ve *route.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v", err)
	}
	want := []string{
		"services.payments.routes[0].match[0].path.regex",
		`services.payments.routes[0].match[1].headers["x-b"].regex`,
		"services.payments.routes[0].backends[0].subset",
		"services.payments.routes[0].backends",
		"services.payments.routes[0].fault.abort.percent",
	}
	var got []string
	for _, fe := range ve.Errors {
		got = append(got, fe.Path)
	}
	if !equal(got, want) {
		t.Fatalf("paths %q, want %q\n%v", got, want, err)
	}
	var se *syntax.Error
	if !errors.As(err, &se) || se.Code != syntax.ErrMissingParen {
		t.Errorf("errors.As finds no regexp syntax error: %v", se)
	}
	if !strings.HasPrefix(err.Error(), "route: invalid config: 5 errors:\n\tservices.payments.routes[0].match[0].path.regex: error parsing regexp") {
		t.Errorf("message:\n%v", err)
	}
}

func TestValidateWarns(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string
		msg  string
	}{
		{"route after a catch-all", base + `
      - backends: [{subset: v2}]
      - match: [{path: {prefix: /a}}]`,
			"services.payments.routes[1]", "never matches: routes[0] before it matches every request"},
		{"route after a / prefix", base + `
      - match: [{path: {prefix: /}}]
      - match: [{path: {prefix: /a}}]`,
			"services.payments.routes[1]", "never matches"},
		{"same entry twice", base + `
      - match: [{path: {prefix: /a}}]
        backends: [{subset: v2}]
      - match: [{path: {prefix: /b}}, {path: {prefix: /a}}]`,
			"services.payments.routes[1].match[1]", "routes[0].match[0] is the same"},
		{"a shorter prefix first", base + `
      - match: [{path: {prefix: /api}}]
        backends: [{subset: v2}]
      - match: [{path: {exact: /api/v2/x}, methods: [GET]}]`,
			"services.payments.routes[1].match[0]", `routes[0].match[0] matches the prefix "/api" first`},
		{"per-try timeout not below timeout", base + `
      - timeout: 1s
        retries: {attempts: 2, perTryTimeout: 1s}`,
			"services.payments.routes[0].retries.perTryTimeout", "not below the route's timeout"},
		{"mirror to the same destination", base + `
      - backends: [{subset: v2}]
        mirror: {subset: v2, percent: 10}`,
			"services.payments.routes[0].mirror", "mirrors to payments/v2"},
		{"lower-case method", base + `
      - match: [{methods: [get]}]`,
			"services.payments.routes[0].match[0].methods[0]", `methods are case-sensitive: "get" does not match GET`},
		{"mirror of nothing", base + `
      - mirror: {subset: v2}`,
			"services.payments.routes[0].mirror.percent", "nothing is mirrored"},
		{"pending without connections", `
services:
  web: {trafficPolicy: {connectionPool: {maxRequests: 2, maxPendingRequests: 5}}}`,
			"services.web.trafficPolicy.connectionPool.maxPendingRequests", "no call is ever pending without maxConnections"},
		{"connect timeout of a subset", `
services:
  web:
    subsets:
      v1: {tags: [v1], trafficPolicy: {connectionPool: {connectTimeout: 2s}}}`,
			"services.web.subsets.v1.trafficPolicy.connectionPool.connectTimeout", "serves every subset it belongs to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.yaml)
			warns, err := route.Validate(cfg)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			tab, err := route.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(tab.Warnings()) != len(warns) {
				t.Errorf("table warnings %v, Validate's %v", tab.Warnings(), warns)
			}
			for _, w := range warns {
				if w.Path == tt.path && strings.Contains(w.Message, tt.msg) {
					return
				}
			}
			t.Fatalf("no warning at %s containing %q; got %v", tt.path, tt.msg, warns)
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		format route.Format
		want   error
		msg    string
	}{
		{"yaml", "services: {web: {routes: [{timeout: 1s}]}}", route.YAML, nil, ""},
		{"json detected", `{"services": {"web": {"routes": [{"timeout": "1s"}]}}}`, route.Detect, nil, ""},
		{"yaml flow mapping detected", `{services: {web: {routes: [{timeout: 1s}]}}}`, route.Detect, nil, ""},
		{"unknown yaml field", "services: {web: {routs: []}}", route.YAML, route.ErrSyntax, "field routs not found"},
		{"unknown json field", `{"services": {"web": {"routs": []}}}`, route.JSON, route.ErrSyntax, `unknown field "routs"`},
		{"bad duration", "services: {web: {routes: [{timeout: 5}]}}", route.YAML, route.ErrSyntax, `bad duration "5"`},
		{"bad json duration", `{"services": {"web": {"routes": [{"timeout": 5}]}}}`, route.JSON, route.ErrSyntax, "a duration must be a string"},
		{"wrong type", "services: {web: {routes: {a: 1}}}", route.YAML, route.ErrSyntax, "cannot unmarshal"},
		{"two documents", "services: {}\n---\nservices: {}", route.YAML, route.ErrSyntax, "more than one document"},
		{"json trailing data", `{"services": {}} {}`, route.JSON, route.ErrSyntax, "data after the config"},
		{"empty", "  \n# nothing\n", route.YAML, route.ErrEmpty, ""},
		{"empty json", "", route.JSON, route.ErrEmpty, ""},
		{"bad yaml", "services: [\n", route.YAML, route.ErrSyntax, "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := route.Parse([]byte(tt.in), tt.format)
			if tt.want == nil {
				if err != nil || cfg == nil {
					t.Fatalf("error %v", err)
				}
				if cfg.Services["web"].Routes[0].Timeout.String() != "1s" {
					t.Fatalf("config %+v", cfg.Services["web"])
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestConfigRoundTrip(t *testing.T) {
	tab := load(t, "routes.yaml")
	again, err := route.Compile(tab.Config())
	if err != nil {
		t.Fatal(err)
	}
	if again.Version() != tab.Version() {
		t.Fatalf("version %s after a round trip, was %s", again.Version(), tab.Version())
	}
	v, err := route.Compile(tab.Config(), route.WithVersion("v7"), route.WithSource("test"))
	if err != nil || v.Version() != "v7" || v.Source() != "test" {
		t.Fatalf("%v %q %q", err, v.Version(), v.Source())
	}
}

// TestNoFalseShadowWarnings: routes that only look alike are not
// reported.
func TestNoFalseShadowWarnings(t *testing.T) {
	warns, err := route.Validate(mustParse(t, base+`
      - match: [{path: {prefix: /api}, methods: [GET]}]
      - match: [{path: {prefix: /api/v2}}]
      - match: [{path: {prefix: /b, ignoreCase: true}}]
      - match: [{path: {prefix: /b/x}}]
      - match: [{path: {prefix: /c}}]
      - match: [{path: {regex: "/c.*"}}, {path: {prefix: /D, ignoreCase: true}}, {path: {exact: /d}}]
`))
	if err != nil || len(warns) != 0 {
		t.Fatalf("warnings %v, error %v", warns, err)
	}
}
