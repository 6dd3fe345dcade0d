// Package contrib checks what contrib/ ships for Prometheus and Grafana
// against a real daemon: the rules pass promtool, and every metric the
// dashboard and the rules query is one the daemon really exports.
package contrib

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/e2e/engine"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// series maps each exported series (name{labels}) to its value text.
func series(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

func names(s map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range s {
		if i := strings.IndexByte(k, '{'); i >= 0 {
			k = k[:i]
		}
		out[k] = true
	}
	return out
}

// queried are the metric names in PromQL text: ours and the Go client's.
var queried = regexp.MustCompile(`\b(?:stowage|process|go)_[a-z0-9_]+\b`)

func TestDashboardAndRulesQueryRealMetrics(t *testing.T) {
	root := daemon.ModuleRoot(t)
	e := engine.Start(t, engine.Options{})
	addr := freeAddr(t)
	// The web view shares the metrics listener.
	d := daemon.Start(t, daemon.Options{Args: []string{"--backends", "dir,tmpfs,image",
		"--metrics-addr", addr, "--ui-addr", addr, "--metrics-volume-usage"}})
	vol := "ct-img-" + strings.TrimPrefix(d.Name, "stw-")
	e.MustDocker(t, "volume", "create", "-d", d.Name, "-o", "backend=image", "-o", "size=10M", vol)
	e.MustDocker(t, "run", "--rm", "--network", "none", "-v", vol+":/data", e.Image(), "sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=3 && sync")
	e.MustDocker(t, "volume", "create", "-d", d.Name, "plain-"+vol)

	resp, text := get(t, "http://"+addr+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d\n%s", resp.StatusCode, text)
	}
	got := series(text)
	exported := names(got)

	// Per-volume gauges, from the backend's cheap usage.
	key := `{backend="image",volume="` + vol + `"}`
	if got["stowage_volume_size_limit_bytes"+key] != "1.048576e+07" {
		t.Errorf("size limit of %s: %q", vol, got["stowage_volume_size_limit_bytes"+key])
	}
	if u := got["stowage_volume_used_bytes"+key]; u == "" || u == "0" {
		t.Errorf("used bytes of %s after a 3 MiB write: %q", vol, u)
	}

	// The web view answers on the same listener, with its headers.
	resp, page := get(t, "http://"+addr+"/")
	if resp.StatusCode != 200 || !strings.Contains(page, `src="app.js"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("the shared listener's page: %d %v\n%s", resp.StatusCode, resp.Header, page)
	}
	if resp, _ := get(t, "http://"+addr+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz on the shared listener: %d", resp.StatusCode)
	}
	// Read-only, and only for its own Host, on the real listener too.
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, "http://"+addr+"/api/volumes", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /api/volumes: %d, want 405", m, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/summary", nil)
	req.Host = "rebound.example:" + addr[strings.LastIndexByte(addr, ':')+1:]
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with a foreign Host: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}

	// Every metric the dashboard and the rules name is exported.
	var exprs []string
	var walk func(v interface{})
	walk = func(v interface{}) {
		switch v := v.(type) {
		case map[string]interface{}:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []interface{}:
			for _, x := range v {
				walk(x)
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "contrib/grafana/stowage.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash interface{}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("contrib/grafana/stowage.json: %v", err)
	}
	walk(dash)
	rules, err := os.ReadFile(filepath.Join(root, "contrib/prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(rules), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			exprs = append(exprs, line)
		}
	}
	seen := map[string]bool{}
	for _, x := range exprs {
		for _, n := range queried.FindAllString(x, -1) {
			seen[n] = true
		}
	}
	var missing, all []string
	for n := range seen {
		all = append(all, n)
		if !exported[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(all)
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("queried but not exported: %v", missing)
	}
	if len(all) < 10 {
		t.Errorf("only %d metric names found in the dashboard and rules: %v", len(all), all)
	}
	t.Logf("dashboard and rules query %d metrics, all exported: %v", len(all), all)

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("no promtool: apt-get install prometheus (.ci/run installs it)")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(root, "contrib/prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// --ui-addr is refused off loopback exactly like --metrics-addr, and the
// usage gauges need the metrics listener.
func TestFlagsRefused(t *testing.T) {
	engine.RequireRoot(t)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--ui-addr", "0.0.0.0:9"}, []string{"--ui-addr", "only loopback"}},
		{[]string{"--ui-addr", "192.0.2.1:9"}, []string{"--ui-addr", "only loopback"}},
		{[]string{"--ui-addr", "unix:relative.sock"}, []string{"--ui-addr", "needs an absolute path"}},
		{[]string{"--metrics-volume-usage"}, []string{"--metrics-volume-usage needs --metrics-addr"}},
	} {
		args := append([]string{"serve", "--root", t.TempDir(), "--socket", "/tmp/" + daemon.RandomName("stwc") + ".sock"}, c.args...)
		out, err := exec.Command(daemon.Bin(t), args...).CombinedOutput()
		ok := err != nil
		for _, w := range c.want {
			ok = ok && strings.Contains(string(out), w)
		}
		if !ok {
			t.Errorf("serve %v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
}
