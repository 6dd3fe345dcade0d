// Package ui tests the web view (serve --ui-addr) in a real browser:
// Debian's chromium, driven with chromedp, against a real stowage serving a
// private Docker engine. Like every e2e suite it fails, never skips, when
// the engine or the browser is missing.
package ui

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

// browser is one headless chromium with its console, exceptions and
// dialogs recorded: any of them fails the test.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func (b *browser) record(s string) {
	b.mu.Lock()
	b.errs = append(b.errs, s)
	b.mu.Unlock()
}

func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("no chromium: apt-get install chromium (.ci/run installs it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	b := &browser{ctx: ctx}
	// Console calls, uncaught exceptions and the browser log (failed
	// loads, CSP violations) from the first page on.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				b.record(m.String() + " " + m.URL)
			}
		}
	}()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.record("a dialog opened (an injected script ran): " + ev.Message)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	return b
}

func (b *browser) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JS expression.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v", js, err)
	}
	return v
}

// eval0 runs JS for its effect.
func (b *browser) eval0(t *testing.T, js string) {
	t.Helper()
	eval[any](t, b, js+", true")
}

// waitJS polls a boolean JS expression until it holds; it reports how long
// that took.
func (b *browser) waitJS(t *testing.T, what, js string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if eval[bool](t, b, "!!("+js+")") {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("the page did not show %s within %v; it shows:\n%s", what, within, eval[string](t, b, "document.body.innerText"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var listening = regexp.MustCompile(`msg="serving the web view".*listening="([^"]+)"`)

// uiURL is the page's address from the daemon's last start-up line.
func uiURL(t *testing.T, d *daemon.Daemon) string {
	t.Helper()
	m := listening.FindAllStringSubmatch(d.Log(), -1)
	if len(m) == 0 {
		t.Fatalf("the daemon never said where the web view listens:\n%s", d.Log())
	}
	return "http://" + m[len(m)-1][1] + "/"
}

// row is the JS for the volume row of name (names are plain: see ValidateName).
func row(name string) string {
	return fmt.Sprintf(`document.querySelector('#volumes tr[data-volume=%q]')`, name)
}

// TestWebView: the page as an operator meets it, through a real engine.
func TestWebView(t *testing.T) {
	e := engine.Start(t, engine.Options{})
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(bootFile, []byte("boot-before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bindRoot := t.TempDir()
	d := daemon.Start(t, daemon.Options{Args: []string{
		"--boot-id-file", bootFile, "--backends", "dir,tmpfs,image,bind", "--bind-roots", bindRoot,
		"--ui-addr", "127.0.0.1:0",
	}})
	b := startBrowser(t)
	url := uiURL(t, d)
	suffix := strings.TrimPrefix(d.Name, "stw-")

	b.do(t, chromedp.Navigate(url))
	b.waitJS(t, "that it is live", `document.getElementById('status').textContent.startsWith('live')`, 10*time.Second)

	// A volume made through Docker shows up by itself (the page polls).
	img := "ui-img-" + suffix
	e.MustDocker(t, "volume", "create", "-d", d.Name, "-o", "backend=image", "-o", "size=10M", img)
	took := b.waitJS(t, "the new volume "+img, row(img), 15*time.Second)
	t.Logf("a created volume appeared on the open page after %v", took.Round(10*time.Millisecond))

	// Its usage bar moves when a container writes 5 MiB into its 10 MiB.
	b.waitJS(t, "a usage bar for "+img, row(img)+`.querySelector('.bar')`, 10*time.Second)
	before := eval[string](t, b, row(img)+`.querySelector('.bar').dataset.used`)
	e.MustDocker(t, "run", "--rm", "--network", "none", "-v", img+":/data", e.Image(),
		"sh", "-c", "dd if=/dev/zero of=/data/five bs=1M count=5 && sync")
	b.waitJS(t, "the usage grown by 5 MiB",
		fmt.Sprintf(`Number(%s.querySelector('.bar').dataset.used) >= %s + 4.5*1048576`, row(img), before), 15*time.Second)
	pct := eval[float64](t, b, `Number(`+row(img)+`.querySelector('.bar').dataset.pct)`)
	if pct < 45 || pct > 100 {
		t.Errorf("after 5 MiB in a 10 MiB volume the bar shows %.1f%%", pct)
	}

	// Markup in an option value (a bind path) is shown as text, never run.
	hostile := `x<script>alert(1)<img src=x onerror=alert(2)>"onerror="alert(3)`
	if err := os.Mkdir(filepath.Join(bindRoot, hostile), 0o755); err != nil {
		t.Fatal(err)
	}
	bind := "ui-bind-" + suffix
	e.MustDocker(t, "volume", "create", "-d", d.Name, "-o", "backend=bind", "-o", "path="+filepath.Join(bindRoot, hostile), bind)
	b.waitJS(t, "the bind volume", row(bind), 15*time.Second)
	shown := eval[string](t, b, row(bind)+`.innerText`)
	if !strings.Contains(shown, hostile) {
		t.Errorf("the bind volume's row does not show its path as text; it shows:\n%s", shown)
	}
	if n := eval[int](t, b, `document.querySelectorAll('img, [onerror], script:not([src="app.js"])').length`); n != 0 {
		t.Errorf("%d injected element(s) in the page; the row is:\n%s", n, eval[string](t, b, row(bind)+`.outerHTML`))
	}

	// A volume held by a running container across a (simulated) reboot:
	// stowage killed, the boot ID changed. Its ledger entry is stale, and
	// the page says so with the fix.
	held := "ui-held-" + suffix
	e.MustDocker(t, "volume", "create", "-d", d.Name, held)
	e.MustDocker(t, "run", "-d", "--name", "holder-"+suffix, "--network", "none", "-v", held+":/d", e.Image(), "sleep", "3600")
	b.waitJS(t, "the held volume mounted once", row(held)+` && `+row(held)+`.children[3].textContent === '1'`, 15*time.Second)
	d.Kill(t)
	if err := os.WriteFile(bootFile, []byte("boot-after-"+suffix+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Restart(t)
	url = uiURL(t, d)
	b.do(t, chromedp.Navigate(url))
	b.waitJS(t, "the stale entry of "+held, row(held)+` && `+row(held)+`.querySelector('.stale')`, 15*time.Second)
	fix := eval[string](t, b, row(held)+`.querySelector('.fix').textContent`)
	if fix != "stowage release "+held {
		t.Errorf("the stale entry's fix reads %q", fix)
	}
	finding := fmt.Sprintf(`document.querySelector('#findings tr[data-kind="stale-mount"][data-volume=%q]')`, held)
	b.waitJS(t, "doctor's stale-mount finding", finding, 15*time.Second)
	meaning := eval[string](t, b, finding+`.innerText`)
	if !strings.Contains(meaning, "before the last reboot") || !strings.Contains(meaning, "stowage release "+held) {
		t.Errorf("the finding does not say what it means and what to do:\n%s", meaning)
	}

	// The name filter asks the server for matching names only.
	b.do(t, chromedp.SendKeys(chromedp.CSS("#filter"), "ui-img-"))
	b.waitJS(t, "only "+img+" under the filter", `document.querySelectorAll('#volumes tbody tr').length === 1 && `+row(img), 15*time.Second)
	b.eval0(t, `(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()`)
	b.waitJS(t, "every volume again", `document.querySelectorAll('#volumes tbody tr').length === 3`, 15*time.Second)

	// A refused create is listed among the failed requests, with its error.
	if _, _, err := e.Docker("volume", "create", "-d", d.Name, "-o", "backend=image", "-o", "size=lots", "ui-bad-"+suffix); err == nil {
		t.Fatal("a create with size=lots succeeded")
	}
	b.waitJS(t, "the failed create", `[...document.querySelectorAll('#failed td')].some(td => td.textContent.includes('ui-bad-`+suffix+`'))`, 15*time.Second)

	// Requests since the restart are drawn.
	// (Not docker volume ls: it asks every plugin socket on the machine,
	// and other tests' dead ones make it wait.)
	// A few seconds of them, so the screenshot's chart has a shape.
	for start := time.Now(); time.Since(start) < 8*time.Second; {
		e.MustDocker(t, "volume", "inspect", img)
	}
	b.waitJS(t, "the chart's legend", `[...document.querySelectorAll('#legend > span')].some(s => s.textContent.startsWith('Get'))`, 15*time.Second)

	// The screenshot, a test artifact (the README's is a copy of one).
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	cancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(daemon.ModuleRoot(t), "build", "ui")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "screenshot.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(out, "screenshot.png"))

	// While stowage still answers: else the engine's cleanup waits out
	// dockerd's retries of the holder's Unmount.
	e.MustDocker(t, "rm", "-f", "holder-"+suffix)

	if p := b.problems(); len(p) > 0 {
		t.Errorf("the browser reported:\n%s", strings.Join(p, "\n"))
	}
}
