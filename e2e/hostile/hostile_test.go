// Package hostile is the hostile-input catalog: a table of malicious and
// malformed requests sent over a real stowage socket. For each: a clear
// error, the daemon still answers, and its state file and every byte under
// its root (and the bind root it may adopt from) are unchanged.
package hostile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/e2e/daemon"
	"github.com/stowage/stowage/internal/store"
)

// snapshot describes every entry under the roots: path, mode, owner, size,
// link target and a hash of the content.
func snapshot(t *testing.T, roots ...string) string {
	t.Helper()
	var lines []string
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				lines = append(lines, p+" ERR "+err.Error())
				return nil
			}
			var st unix.Stat_t
			unix.Lstat(p, &st)
			line := fmt.Sprintf("%s %o %d:%d %d", p, st.Mode, st.Uid, st.Gid, st.Size)
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				line += " -> " + target
			case d.Type().IsRegular():
				b, _ := os.ReadFile(p)
				sum := sha256.Sum256(b)
				line += " " + hex.EncodeToString(sum[:8])
			}
			lines = append(lines, line)
			return nil
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

type raw struct {
	sock string
	http *http.Client
}

func (r *raw) do(t *testing.T, method, path string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://plugin.moby.localhost"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	res, err := r.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var e struct{ Err string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", method, path, res.StatusCode, b)
	}
	return res.StatusCode, e.Err
}

func jsonBody(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestHostileCatalog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("runs a real stowage serve: needs root")
	}
	base := t.TempDir()
	binds := filepath.Join(base, "binds")
	os.MkdirAll(filepath.Join(binds, "ok"), 0o755)
	os.WriteFile(filepath.Join(base, "secret"), []byte("outside the bind root"), 0o600)
	os.Symlink(base, filepath.Join(binds, "escape")) // a symlink out of the root
	d := daemon.Start(t, daemon.Options{Args: []string{"--log-level", "warn", "--backends", "dir,tmpfs,image,bind", "--bind-roots", binds}})
	r := &raw{sock: d.Socket, http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.Socket)
		}}}}

	// A volume that exists, so refusals are checked against real state too.
	if st, e := r.do(t, "POST", "/VolumeDriver.Create", strings.NewReader(`{"Name":"keep","Opts":{"mode":"0700"}}`)); st != 200 {
		t.Fatalf("create keep: %d %s", st, e)
	}
	os.WriteFile(filepath.Join(d.Root, "dir", "keep", "data"), []byte("precious"), 0o644)

	id := strings.Repeat("ab", 32)
	names := map[string]string{
		"slash":        "a/b",
		"dotdot":       "..",
		"dotdot-path":  "../../etc",
		"dot":          ".",
		"nul":          "a\x00b",
		"control":      "a\x1bb",
		"newline":      "keep\n",
		"rtl":          "abc\u202egnp.exe",
		"absolute":     "/etc/passwd",
		"10000 bytes":  strings.Repeat("n", 10000),
		"empty":        "",
		"leading dash": "-rf",
		"space":        "a b",
		"unicode":      "vol\u00e9",
	}
	type tc struct {
		name, method, path, body string
		status                   int
		want                     string
	}
	var cases []tc
	for label, n := range names {
		for _, op := range []string{"Create", "Remove", "Mount", "Path", "Get"} {
			cases = append(cases, tc{"name " + label + " " + op, "POST", "/VolumeDriver." + op, jsonBody(map[string]string{"Name": n, "ID": id}), 500, "volume name"})
		}
		// Unmount of anything is accepted (Docker never replays mounts) and changes nothing.
		cases = append(cases, tc{"name " + label + " Unmount", "POST", "/VolumeDriver.Unmount", jsonBody(map[string]string{"Name": n, "ID": id}), 200, ""})
	}
	opts := []struct {
		label string
		opts  map[string]string
		want  string
	}{
		{"uid -1", map[string]string{"uid": "-1"}, "option uid"},
		{"uid 2^32-1", map[string]string{"uid": "4294967295"}, "option uid"},
		{"gid name", map[string]string{"gid": "root"}, "option gid"},
		{"mode 99999", map[string]string{"mode": "99999"}, "option mode"},
		{"mode 8", map[string]string{"mode": "8"}, "option mode"},
		{"unknown option", map[string]string{"sise": "1G"}, `unknown option "sise"`},
		{"unknown backend", map[string]string{"backend": "nfs"}, `backend "nfs" is not enabled`},
		{"image size overflow", map[string]string{"backend": "image", "size": "99999999999999999999"}, "option size"},
		{"image size 2^64", map[string]string{"backend": "image", "size": "16EiB"}, "option size"},
		{"image size negative", map[string]string{"backend": "image", "size": "-1G"}, "option size"},
		{"image size zero", map[string]string{"backend": "image", "size": "0"}, "option size"},
		{"image fs unknown", map[string]string{"backend": "image", "size": "64M", "fs": "ntfs"}, "fs"},
		{"tmpfs size overflow", map[string]string{"backend": "tmpfs", "size": "1e99"}, "option size"},
		{"bind outside roots", map[string]string{"backend": "bind", "path": "/etc"}, "bind"},
		{"bind dotdot", map[string]string{"backend": "bind", "path": binds + "/../secret"}, "bind"},
		{"bind root itself", map[string]string{"backend": "bind", "path": binds}, "bind"},
		{"bind symlink out", map[string]string{"backend": "bind", "path": binds + "/escape"}, "bind"},
		{"bind relative", map[string]string{"backend": "bind", "path": "ok"}, "absolute"},
		{"bind missing", map[string]string{"backend": "bind", "path": binds + "/nope"}, "bind"},
		{"bind no path", map[string]string{"backend": "bind"}, "path"},
		{"from missing", map[string]string{"from": "nosuch"}, "nosuch"},
		{"from itself", map[string]string{"from": "fresh"}, "itself"},
		{"from bad name", map[string]string{"from": "../keep"}, "from"},
	}
	for _, o := range opts {
		cases = append(cases, tc{"option " + o.label, "POST", "/VolumeDriver.Create", jsonBody(map[string]interface{}{"Name": "fresh", "Opts": o.opts}), 500, o.want})
	}
	huge := map[string]string{}
	for i := 0; i < 10000; i++ {
		huge[fmt.Sprintf("k%05d", i)] = "v"
	}
	cases = append(cases,
		tc{"Opts huge", "POST", "/VolumeDriver.Create", jsonBody(map[string]interface{}{"Name": "fresh", "Opts": huge}), 500, "unknown option"},
		tc{"existing with other options", "POST", "/VolumeDriver.Create", `{"Name":"keep","Opts":{"mode":"0755"}}`, 500, "already exists"},
		tc{"invalid JSON", "POST", "/VolumeDriver.Create", `{"Name":`, 400, "not a valid Create request"},
		tc{"JSON array", "POST", "/VolumeDriver.Create", `[1,2]`, 400, "not a valid Create request"},
		tc{"Name number", "POST", "/VolumeDriver.Create", `{"Name":5}`, 400, "not a valid Create request"},
		tc{"Opts string", "POST", "/VolumeDriver.Create", `{"Name":"fresh","Opts":"x"}`, 400, "not a valid Create request"},
		tc{"Opts value number", "POST", "/VolumeDriver.Create", `{"Name":"fresh","Opts":{"mode":755}}`, 400, "not a valid Create request"},
		tc{"ID number", "POST", "/VolumeDriver.Mount", `{"Name":"keep","ID":7}`, 400, "not a valid Mount request"},
		tc{"empty body Create", "POST", "/VolumeDriver.Create", ``, 400, "not a valid Create request"},
		tc{"Remove of mounted-looking ID", "POST", "/VolumeDriver.Mount", `{"Name":"keep","ID":"../../x"}`, 500, "mount ID"},
		tc{"empty ID", "POST", "/VolumeDriver.Mount", `{"Name":"keep","ID":""}`, 500, "mount ID is empty"},
		tc{"unknown endpoint", "POST", "/VolumeDriver.Format", `{}`, 404, "unknown endpoint"},
		tc{"endpoint with suffix", "POST", "/VolumeDriver.Get/x", `{"Name":"keep"}`, 404, "unknown endpoint"},
		tc{"lower-case endpoint", "POST", "/volumedriver.remove", `{"Name":"keep"}`, 404, "unknown endpoint"},
		tc{"GET", "GET", "/VolumeDriver.List", ``, 405, "POST"},
		tc{"PUT", "PUT", "/VolumeDriver.Remove", `{"Name":"keep"}`, 405, "POST"},
		tc{"DELETE", "DELETE", "/VolumeDriver.Remove", `{"Name":"keep"}`, 405, "POST"},
		tc{"release unknown ID", "POST", "/Stowage.Release", `{"Name":"keep","IDs":["nope"]}`, 500, "holds no mount"},
		tc{"release bad name", "POST", "/Stowage.Release", `{"Name":"../keep"}`, 500, "volume name"},
	)
	ten := bytes.Repeat([]byte("x"), 10<<20)
	bigBody := append(append([]byte(`{"Name":"fresh","Opts":{"k":"`), ten...), []byte(`"}}`)...)

	// The daemon folds its journal into the state file once idle: that
	// rewrite is no change of state, so compare from after it.
	waitFolded(t, d.Root)
	before := snapshot(t, d.Root, base)
	check := func(t *testing.T) {
		t.Helper()
		if st, e := r.do(t, "POST", "/VolumeDriver.Capabilities", strings.NewReader(`{}`)); st != 200 {
			t.Fatalf("the daemon stopped answering: %d %s", st, e)
		}
		if after := snapshot(t, d.Root, base); after != before {
			t.Fatalf("state or disk changed:\n--- before\n%s\n--- after\n%s", before, after)
		}
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			st, e := r.do(t, c.method, c.path, strings.NewReader(c.body))
			if st != c.status || !strings.Contains(e, c.want) {
				t.Errorf("%d %q, want %d with %q", st, e, c.status, c.want)
			}
			if st != 200 && len(e) > 4096 {
				t.Errorf("error is %d bytes long: not a clear error", len(e))
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			check(t)
		})
	}
	t.Run("10 MiB body", func(t *testing.T) {
		st, e := r.do(t, "POST", "/VolumeDriver.Create", bytes.NewReader(bigBody))
		if st != 413 || !strings.Contains(e, "larger than") {
			t.Errorf("%d %q, want 413", st, e)
		}
		check(t)
	})
	// Slow clients: many connections that send half a request and stall
	// must not hold the daemon.
	t.Run("slow clients", func(t *testing.T) {
		var conns []net.Conn
		for i := 0; i < 64; i++ {
			c, err := net.Dial("unix", d.Socket)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "POST /VolumeDriver.Create HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"Name\":\"sl")
			conns = append(conns, c)
		}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if st, e := r.do(t, "POST", "/VolumeDriver.Get", strings.NewReader(`{"Name":"keep"}`)); st != 200 {
					t.Errorf("Get while slow clients stall: %d %s", st, e)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Get took %v while slow clients stall", d)
				}
			}()
		}
		wg.Wait()
		check(t)
	})
	if b, _ := os.ReadFile(filepath.Join(d.Root, "dir", "keep", "data")); string(b) != "precious" {
		t.Fatal("the existing volume's data changed")
	}
}

// waitFolded waits until the daemon's journal under root holds nothing the
// state file does not.
func waitFolded(t *testing.T, root string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if pending, err := store.JournalPending(filepath.Join(root, store.FileName)); err == nil && !pending {
			return
		}
	}
	t.Fatal("the daemon's journal was not folded within 10 s of the last change")
}
