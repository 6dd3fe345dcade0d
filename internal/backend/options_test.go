package backend

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"1": 1, "512M": 512 << 20, "10G": 10 << 30, "1.5GiB": 3 << 29, "1k": 1024, " 2 KB ": 2048}
	for s, want := range good {
		if n, err := ParseSize(s); err != nil || n != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1", "1.5", "0.1k", "1X", "1..2M", "99999999999P", "18446744073709551616", "9223372036854775808", "1e3", strings.Repeat("9", 41)} {
		if n, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, n)
		}
	}
}

func TestParseModeAndID(t *testing.T) {
	for _, s := range []string{"99999", "8", "-1", "", "0o", "07777 ", "10000"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
	if m, err := ParseMode("1777"); err != nil || m != 0o1777 {
		t.Errorf("ParseMode(1777) = %o, %v", m, err)
	}
	for _, s := range []string{"-1", "4294967295", "4294967296", "root", "", " 1", "1.0"} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) accepted", s)
		}
	}
}

var fuzzModule = Module{ID: "fz", Options: append(Ownership(),
	Option{Name: "size", Type: TypeSize},
	Option{Name: "path", Type: TypePath},
	Option{Name: "ro", Type: TypeBool},
	Option{Name: "label", Type: TypeString},
	Option{Name: "port", Type: TypePort},
	Option{Name: "host", Type: TypeString, Normalize: func(s string) (string, error) {
		if s == "" || strings.ContainsAny(s, " ,") {
			return "", fmt.Errorf("bad host")
		}
		return strings.ToLower(s), nil
	}},
), Refused: []Refused{{Name: "password", Why: "keys only"}}}

// FuzzParseSize: an accepted size is positive, fits an int64 and, printed
// back in bytes, parses to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "512M", "1.5GiB", "0", "-1", "8EiB", "9223372036854775807", "1e9", "1..2k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n == 0 || n > math.MaxInt64 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if m, err := ParseSize(strconv.FormatUint(n, 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d does not round-trip: %d, %v", s, n, m, err)
		}
	})
}

// FuzzParseOptions: Module.Parse never panics, accepts only declared keys,
// and its normalised output parses to itself (what is recorded is stable).
func FuzzParseOptions(f *testing.F) {
	f.Add("uid", "1000", "mode", "0755")
	f.Add("size", "10G", "path", "/srv/x")
	f.Add("uid", "-1", "mode", "99999")
	f.Add("path", "../../etc", "size", "18446744073709551616")
	f.Add("backend", "dir", "ro", "yes")
	f.Add("port", "022", "host", "Files.Example")
	f.Add("password", "x", "port", "70000")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		raw := map[string]string{k1: v1, k2: v2}
		out, err := fuzzModule.Parse(raw)
		if err != nil {
			if out != nil {
				t.Fatalf("Parse failed (%v) but returned options %v", err, out)
			}
			return
		}
		if _, ok := raw["password"]; ok {
			t.Fatalf("a refused option was accepted: %v", raw)
		}
		for k, v := range out {
			o := fuzzModule.option(k)
			if o == nil {
				t.Fatalf("Parse returned undeclared option %q", k)
			}
			if o.Type == TypePath && (!strings.HasPrefix(v, "/") || strings.ContainsRune(v, 0)) {
				t.Fatalf("path option %q accepted", v)
			}
		}
		again, err := fuzzModule.Parse(out)
		if err != nil || len(again) != len(out) {
			t.Fatalf("normalised options %v do not parse again: %v", out, err)
		}
		for k, v := range out {
			if again[k] != v {
				t.Fatalf("option %s normalises %q then %q", k, v, again[k])
			}
		}
	})
}

func TestUnknownOptionsErrorIsBounded(t *testing.T) {
	raw := map[string]string{}
	for i := 0; i < 10000; i++ {
		raw[strconv.Itoa(100000+i)] = "v"
	}
	_, err := fuzzModule.Parse(raw)
	if err == nil || len(err.Error()) > 512 || !strings.Contains(err.Error(), "and 9995 more") || !strings.Contains(err.Error(), `"100000"`) {
		t.Fatalf("error for 10000 unknown options (%d bytes): %.300v", len(fmt.Sprint(err)), err)
	}
}

func TestRefusedOptionsSayWhyAndNormalizeRuns(t *testing.T) {
	_, err := fuzzModule.Parse(map[string]string{"password": "x", "nonsense": "y"})
	if err == nil || !strings.Contains(err.Error(), `option "password" is refused by backend "fz": keys only`) {
		t.Errorf("Parse password = %v", err)
	}
	out, err := fuzzModule.Parse(map[string]string{"port": "022", "host": "Files.Example"})
	if err != nil || out["port"] != "22" || out["host"] != "files.example" {
		t.Errorf("Parse = %v, %v", out, err)
	}
	for _, p := range []string{"0", "65536", "-1", "x", ""} {
		if _, err := fuzzModule.Parse(map[string]string{"port": p}); err == nil {
			t.Errorf("port %q accepted", p)
		}
	}
	if _, err := fuzzModule.Parse(map[string]string{"host": "a b"}); err == nil || !strings.Contains(err.Error(), "bad host") {
		t.Errorf("Normalize error not reported: %v", err)
	}
}
