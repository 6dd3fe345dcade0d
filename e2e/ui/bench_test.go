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
	"math/rand"
	"os"
	"sort"
	"strconv"
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
	r := rand.New(rand.NewSource(1))
	const k = 6000
	gets(t, c, r, n, 500) // warm up

	closed := gets(t, c, r, n, k)

	b := startBrowser(t)
	s := time.Now()
	b.do(t, chromedp.Navigate(url))
	b.waitJS(t, "the first rows", `document.querySelectorAll('#volumes tbody tr').length === 50`, time.Minute)
	paint := time.Since(s)
	time.Sleep(3 * time.Second) // the page polls every second from here on
	open := gets(t, c, r, n, k)

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
	t.Logf("| open, polling every 1 s | %.3f | %.3f |", pct(open, .5), pct(open, .99))
	t.Logf("| open, 4 creates/s (rescans) | %.3f | %.3f |", pct(churn, .5), pct(churn, .99))
	t.Logf("first paint (navigate to 50 rows shown) at N=%d: %v; page counted %.0f volumes at the end (%d created meanwhile)", n, paint.Round(time.Millisecond), total, created)
}

func (b *browser) eval2(t *testing.T, js string, out *float64) {
	*out = eval[float64](t, b, js)
}
