//go:build stowagebench

package ui

// The web view's cost to the daemon (make bench-ui): Get latency over the
// plugin socket at N volumes with no page open, with the page open in
// chromium (polling every second), and with the page open while volumes
// are created (each create makes the view rescan the names); and the
// page's first paint at N. STOWAGE_UIBENCH_N sets N (default 100000).

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/client"
	"github.com/stowage/stowage/internal/e2e/daemon"
)

func pct(ds []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := min(max(int(p*float64(len(s))+0.5)-1, 0), len(s)-1)
	return float64(s[i]) / 1e6
}

func call(t *testing.T, c *client.Client, op string, req, resp interface{}) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := time.Now()
	if err := c.Call(ctx, "/VolumeDriver."+op, req, resp); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return time.Since(s)
}

func name(i int) string { return fmt.Sprintf("v%07d", i) }

func populate(t *testing.T, c *client.Client, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				call(t, c, "Create", &volume.CreateRequest{Name: name(i)}, nil)
			}
		}()
	}
	wg.Wait()
}

// gets times k Gets of random volumes, one after another, as dockerd asks.
func gets(t *testing.T, c *client.Client, r *rand.Rand, n, k int) []time.Duration {
	out := make([]time.Duration, 0, k)
	for i := 0; i < k; i++ {
		var resp volume.GetResponse
		out = append(out, call(t, c, "Get", &volume.GetRequest{Name: name(r.Intn(n))}, &resp))
		time.Sleep(200 * time.Microsecond)
	}
	return out
}

func TestBenchUI(t *testing.T) {
	n := 100000
	if s := os.Getenv("STOWAGE_UIBENCH_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("STOWAGE_UIBENCH_N=%q", s)
		}
	}
	d := daemon.Start(t, daemon.Options{Args: []string{"--backends", "dir", "--ui-addr", "127.0.0.1:0", "--log-level", "info"}})
	c := d.Client()
	began := time.Now()
	populate(t, c, n)
	t.Logf("populated %d volumes in %v", n, time.Since(began).Round(time.Second))
	url := uiURL(t, d)
	// The API alone: a page of 50 rows when nothing changed (the names
	// kept from the last scan) and right after a Create (a new scan).
	var cached, rescan []time.Duration
	for i := 0; i < 10; i++ {
		call(t, c, "Create", &volume.CreateRequest{Name: fmt.Sprintf("api-%d", i)}, nil)
		time.Sleep(1100 * time.Millisecond)
		rescan = append(rescan, apiGet(t, url+"api/volumes?limit=50"))
		cached = append(cached, apiGet(t, url+"api/volumes?limit=50&offset=50000"))
	}
	r := rand.New(rand.NewSource(1))
	const k = 6000
	gets(t, c, r, n, 500) // warm up

	closed := gets(t, c, r, n, k)
	rssClosed := rss(t, d.Name)

	// The page's requests without a browser: what the daemon itself pays
	// for an open page, apart from the browser's CPU on the same machine.
	stopPoll := make(chan struct{})
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		for {
			select {
			case <-stopPoll:
				return
			case <-time.After(time.Second):
				for _, p := range []string{"api/summary", "api/volumes?offset=0&limit=50&q="} {
					if resp, err := http.Get(url + p); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					} else {
						t.Errorf("polling %s: %v", p, err)
					}
				}
			}
		}
	}()
	polled := gets(t, c, r, n, k)
	close(stopPoll)
	pollWG.Wait()

	// First paint: from the start of navigation to the first 50 rows
	// drawn (the page's own performance mark), each load right after a
	// Create so the names are scanned afresh, as on a first visit.
	b := startBrowser(t)
	var paints []time.Duration
	for i := 0; i < 7; i++ {
		// No page polls meanwhile, or it would rescan first.
		b.do(t, chromedp.Navigate("about:blank"))
		call(t, c, "Create", &volume.CreateRequest{Name: fmt.Sprintf("paint-%d", i)}, nil)
		time.Sleep(1100 * time.Millisecond)
		b.do(t, chromedp.Navigate(url))
		b.waitJS(t, "the first rows", `performance.getEntriesByName('stowage-first-rows').length > 0`, time.Minute)
		ms := eval[float64](t, b, `performance.getEntriesByName('stowage-first-rows')[0].startTime`)
		t.Logf("load %d: %s", i, eval[string](t, b, `(() => { const n = performance.getEntriesByType('navigation')[0];
			const r = performance.getEntriesByType('resource').map(e => e.name.replace(/^.*\//, '') + ' ' + e.startTime.toFixed(0) + '+' + e.duration.toFixed(0));
			return 'html ' + n.responseEnd.toFixed(0) + ' dcl ' + n.domContentLoadedEventEnd.toFixed(0) + ' | ' + r.join(', ');
		})()`))
		if i > 0 { // the first load also starts the browser's own caches
			paints = append(paints, time.Duration(ms*float64(time.Millisecond)))
		}
	}
	if n := eval[int](t, b, `document.querySelectorAll('#volumes tbody tr').length`); n != 50 {
		t.Fatalf("%d rows on the first page", n)
	}
	openedAt := time.Now()
	time.Sleep(3 * time.Second) // the page polls every second from here on
	open := gets(t, c, r, n, k)
	rssOpen := rss(t, d.Name)

	// A created volume on the open page: names starting with "a" sort
	// before every "v…", so it shows on the first page.
	var appear []time.Duration
	for i := 0; i < 5; i++ {
		nm := fmt.Sprintf("appear-%d", i)
		call(t, c, "Create", &volume.CreateRequest{Name: nm}, nil)
		appear = append(appear, b.waitJS(t, nm, row(nm), time.Minute))
		time.Sleep(1500 * time.Millisecond)
	}

	// Page open and volumes being created: each Create makes the view
	// rescan the names (at most once a second).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	created := 0
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
				call(t, c, "Create", &volume.CreateRequest{Name: fmt.Sprintf("churn-%d", created)}, nil)
				created++
			}
		}
	}()
	churn := gets(t, c, r, n, k)
	close(stop)
	wg.Wait()
	var total float64
	b.eval2(t, `Number(document.getElementById('count').textContent.split(' ')[0])`, &total)

	if p := b.problems(); len(p) > 0 {
		t.Errorf("the browser reported: %v", p)
	}
	t.Logf("N=%d, %d sequential Gets per row", n, k)
	t.Logf("| page | Get p50 ms | Get p99 ms |")
	t.Logf("| not open | %.3f | %.3f |", pct(closed, .5), pct(closed, .99))
	t.Logf("| its API polled every 1 s, no browser | %.3f | %.3f |", pct(polled, .5), pct(polled, .99))
	t.Logf("| open in chromium, polling every 1 s | %.3f | %.3f |", pct(open, .5), pct(open, .99))
	t.Logf("| open, 4 creates/s (rescans) | %.3f | %.3f |", pct(churn, .5), pct(churn, .99))
	t.Logf("daemon VmRSS: %.1f MiB before the page was opened, %.1f MiB after %d s with it open (doctor's check included)", rssClosed, rssOpen, int(time.Since(openedAt).Seconds()))
	t.Logf("a created volume appeared on the open page after: p50 %.0f ms, max %.0f ms of %d", pct(appear, .5), pct(appear, 1), len(appear))
	t.Logf("/api/volumes (50 rows): p50 %.0f ms right after a change (rescan of the names), %.0f ms otherwise", pct(rescan, .5), pct(cached, .5))
	t.Logf("first paint (navigation start to 50 rows drawn) at N=%d: p50 %.0f ms, max %.0f ms of %d loads; the page counted %.0f volumes at the end (%d created meanwhile)", n, pct(paints, .5), pct(paints, 1), len(paints), total, created)
}

// rss is the VmRSS (MiB) of the stowage serving socket name.
func rss(t *testing.T, name string) float64 {
	t.Helper()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmd, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmd), "\x00serve\x00") || !strings.Contains(string(cmd), "\x00"+name+"\x00") {
			continue
		}
		st, _ := os.ReadFile("/proc/" + p.Name() + "/status")
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	t.Fatalf("no stowage serve process for %s", name)
	return 0
}

func apiGet(t *testing.T, url string) time.Duration {
	t.Helper()
	s := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return time.Since(s)
}

func (b *browser) eval2(t *testing.T, js string, out *float64) {
	*out = eval[float64](t, b, js)
}
