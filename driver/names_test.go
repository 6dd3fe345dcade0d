package driver

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "A1", "my-vol_1.2", "0", strings.Repeat("x", MaxNameLen)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	bad := map[string]string{
		"":                                "empty",
		"a/b":                             "'/'",
		"/abs":                            "'/'",
		"..":                              "must start with a letter or digit",
		".hidden":                         "must start",
		"-x":                              "must start",
		"a\x00b":                          "NUL",
		"a\nb":                            "control character",
		"a\u202eb":                        "non-ASCII",
		"caf\u00e9":                       "non-ASCII",
		"a b":                             `' '`,
		strings.Repeat("x", MaxNameLen+1): "limit is 200",
		strings.Repeat("x", 10000):        "10000 bytes",
		"x/../../etc":                     "'/'",
	}
	for n, want := range bad {
		err := ValidateName(n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateName(%.30q) = %v, want an error saying %q", n, err, want)
		}
	}
}

func TestValidateMountID(t *testing.T) {
	if err := ValidateMountID(strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "a/b", "a b", "a\x00", strings.Repeat("a", MaxMountIDLen+1)} {
		if ValidateMountID(id) == nil {
			t.Errorf("ValidateMountID(%.20q) accepted", id)
		}
	}
}

// FuzzValidateName: whatever is accepted is a single, harmless path element.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "..", "a/b", "a\x00", ".", "a..b", "\u202e", strings.Repeat("z", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > MaxNameLen {
			t.Fatalf("accepted a name of %d bytes", len(name))
		}
		if filepath.Base(name) != name || name == "." || name == ".." || strings.HasPrefix(name, ".") {
			t.Fatalf("accepted %q, which is not a plain file name", name)
		}
		for i := 0; i < len(name); i++ {
			if name[i] < 0x21 || name[i] > 0x7e {
				t.Fatalf("accepted %q with byte %#x", name, name[i])
			}
		}
	})
}

func FuzzValidateMountID(f *testing.F) {
	f.Add(strings.Repeat("0", 64))
	f.Add("../x")
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateMountID(id) != nil {
			return
		}
		if strings.ContainsAny(id, "/\x00 \n") || len(id) > MaxMountIDLen || id == "" {
			t.Fatalf("accepted mount ID %q", id)
		}
	})
}
