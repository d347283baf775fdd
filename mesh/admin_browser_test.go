package mesh

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
)

// chromium returns the path of Debian's Chromium (or $WEFT_CHROMIUM).
// Without one it skips the test, or fails it when $WEFT_REQUIRE_CHROMIUM
// is set (CI installs Chromium with `make tools`).
func chromium(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("WEFT_CHROMIUM"), "chromium", "chromium-browser"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	const msg = "Chromium not found (looked for $WEFT_CHROMIUM, chromium, chromium-browser): `make tools` run as root installs Debian's chromium package"
	if os.Getenv("WEFT_REQUIRE_CHROMIUM") != "" {
		t.Fatal(msg + "; WEFT_REQUIRE_CHROMIUM is set")
	}
	t.Skip(msg + "; set WEFT_REQUIRE_CHROMIUM=1 to fail instead of skipping")
	return ""
}

// TestAdminPageInChromium opens the admin page in headless Chromium
// while a client calls a 3-endpoint service, sees the 3 endpoints live,
// makes one fail and sees its breaker open on the page within 2 s of the
// flip. It keeps a screenshot of the page as a test artifact (go test
// -artifacts keeps it in the output directory).
func TestAdminPageInChromium(t *testing.T) {
	leaktest.Check(t)
	exe := chromium(t)
	ae := newAdminEnv(t)
	c := ae.client(WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: time.Hour}), WithRoutes(ae.src),
		// Peak EWMA for the latency sparklines; a short decay so that
		// every endpoint keeps being called.
		WithBalancer(func(string) balancer.Policy { return balancer.PeakEWMA(balancer.WithDecay(100 * time.Millisecond)) }))
	hc := c.HTTPClient()
	cc, err := c.DialGRPC("demo-grpc") // a gRPC service on the page too
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(testContext(t, 20*time.Second), cc); err != nil {
		t.Fatalf("gRPC call: %v", err)
	}
	base := serveAdmin(t, c.AdminHandler())

	// Traffic for the scenario: a call every 20 ms, every other one with
	// the canary header, so that every endpoint of "flaky" is called.
	ctx, stopTraffic := context.WithCancel(context.Background())
	var traffic sync.WaitGroup
	traffic.Add(1)
	go func() {
		defer traffic.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://flaky/", nil)
			if i%2 == 1 {
				req.Header.Set("X-Canary", "yes")
			}
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	t.Cleanup(func() { stopTraffic(); traffic.Wait() })

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	// The whole browser session is bounded; its first Run, which starts
	// the browser, must use the browser's context itself (a child's end
	// would close the browser).
	limit, cancelLimit := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelLimit()
	actx, cancelAlloc := chromedp.NewExecAllocator(limit, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctxFor := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bctx, 60*time.Second) }
	if _, err := chromedp.Run(bctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	evalString := func(js string) string {
		t.Helper()
		rctx, cancel := ctxFor()
		defer cancel()
		v, err := chromedp.Run(rctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	pollUntil(t, 30*time.Second, "the page lists the 3 endpoints of flaky", func() bool {
		return evalString(`String(document.querySelectorAll('#svc-flaky tr[data-endpoint][data-health="healthy"]').length)`) == "3"
	})
	pollUntil(t, 30*time.Second, "the page shows the route table", func() bool {
		return evalString(`String(document.querySelectorAll('#routes td').length > 0 && !!document.getElementById('route-version'))`) == "true"
	})

	ae.flaky[1].Store(true)
	b := c.Breakers("flaky")
	pollUntil(t, 30*time.Second, "flaky-2's breaker open", func() bool { return b.Open("flaky-2") })
	flipped := time.Now()
	pollUntil(t, 30*time.Second, "the page shows flaky-2's breaker open", func() bool {
		return evalString(`(document.getElementById('ep-flaky-flaky-2') || {dataset: {}}).dataset.breaker || ''`) == "open"
	})
	d := time.Since(flipped)
	t.Logf("the page showed the open breaker %v after it opened", d.Round(time.Millisecond))
	if d > 2*time.Second {
		t.Errorf("the page showed the open breaker %v after it opened, want within 2s", d.Round(time.Millisecond))
	}
	cls := evalString(`document.getElementById('ep-flaky-flaky-2').className`)
	events := evalString(`document.getElementById('events').textContent`)
	if !bytes.Contains([]byte(cls), []byte("open")) || !bytes.Contains([]byte(events), []byte("flaky/flaky-2: breaker closed → open")) {
		t.Errorf("flip not highlighted: row class %q, events %q", cls, events)
	}
	// Let the sparklines draw a few points before the screenshot.
	pollUntil(t, 30*time.Second, "sparklines drawn", func() bool {
		return evalString(`String(document.querySelectorAll('#svc-flaky svg.spark polyline').length >= 4 && Number(document.getElementById('status').dataset.ticks) >= 8)`) == "true"
	})

	var shot []byte
	rctx, cancel := ctxFor()
	shot, err = chromedp.Run(rctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if _, err := png.Decode(bytes.NewReader(shot)); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), "admin-page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("WEFT_ADMIN_SCREENSHOT"); dir != "" {
		if err := os.WriteFile(dir, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	cancelBrowser()
	cancelAlloc()
}
