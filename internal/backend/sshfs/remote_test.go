package sshfs

import (
	"strings"
	"testing"
)

func TestParseRemoteAccepts(t *testing.T) {
	good := map[string]string{
		"root@127.0.0.1:/srv/x":          "root@127.0.0.1:/srv/x",
		"backup.Example.COM:/":           "backup.example.com:/",
		"_svc-1@files:/data/app_1":       "_svc-1@files:/data/app_1",
		"[::1]:/srv":                     "[::1]:/srv",
		"u@[FE80::1]:/a:b@c%d~e+f=g":     "u@[fe80::1]:/a:b@c%d~e+f=g",
		"h:/path@with-at":                "h:/path@with-at",
		"a.b-c.d:/x/y.z":                 "a.b-c.d:/x/y.z",
		"user.name@10.0.0.2:/srv/v/name": "user.name@10.0.0.2:/srv/v/name",
	}
	for in, want := range good {
		got, err := NormalizeRemote(in)
		if err != nil || got != want {
			t.Errorf("NormalizeRemote(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Everything that could reach ssh or sshfs as an option, or a shell as a
// metacharacter, is refused with a reason.
func TestParseRemoteRefusesHostileSpecs(t *testing.T) {
	bad := map[string]string{
		"":                                       "[USER@]HOST:PATH",
		"-oProxyCommand=touch /tmp/pwned:/srv":   "printable",
		"-oProxyCommand=touch:/srv":              "'-'",
		"root@-oProxyCommand=sh:/srv":            "host",
		"host:/srv;rm -rf /":                     "printable",
		"host:/srv;x":                            "';'",
		"host:/srv|x":                            "'|'",
		"host:/srv&x":                            "'&'",
		"host:/$(id)":                            "'$'",
		"host:/`id`":                             "'`'",
		"host:/a'b":                              `'\''`,
		`host:/a"b`:                              `'"'`,
		"host:/a,allow_other":                    "','",
		"host:/a\\b":                             `'\\'`,
		"host:/a\nb":                             "printable",
		"host:/a\x00b":                           "printable",
		"host :/srv":                             "printable",
		"host:relative/path":                     "absolute",
		"host:":                                  "empty",
		":/srv":                                  "empty",
		"root@:/srv":                             "empty",
		"@host:/srv":                             "user",
		"-user@host:/srv":                        "'-'",
		"us/er@host:/srv":                        "user",
		"9user@host:/srv":                        "user",
		"host/srv":                               "':'",
		"host:/a/../b":                           "clean",
		"host:/a/":                               "clean",
		"host://a":                               "clean",
		"ho_st:/a":                               "DNS",
		"-host:/a":                               "'-'",
		"host-:/a":                               "DNS",
		"a..b:/a":                                "DNS",
		"[::1/srv":                               "']'",
		"[1.2.3.4]:/srv":                         "IPv6",
		"[::1]/srv":                              "':'",
		"[zz::1]:/srv":                           "IPv6",
		"host:/é":                                "printable",
		strings.Repeat("a", 300) + ":/srv":       "longer",
		"host:/" + strings.Repeat("a", 2000):     "longer",
		"host:/" + strings.Repeat("a", 64) + "*": "'*'",
	}
	for in, want := range bad {
		got, err := NormalizeRemote(in)
		if err == nil {
			t.Errorf("NormalizeRemote(%q) = %q; want an error", in, got)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NormalizeRemote(%q) error %q; want it to mention %q", in, err, want)
		}
	}
}

func TestIdentityNameIsAFileNameOnly(t *testing.T) {
	for _, n := range []string{"id_ed25519", "swarm.key", "A-1_b"} {
		if _, err := CheckIdentityName(n); err != nil {
			t.Errorf("CheckIdentityName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "../../etc/shadow", "/etc/shadow", "a/b", ".", "..", ".hidden", "-i", "a b", "%d", "~root", "a\\b", strings.Repeat("k", 256)} {
		if _, err := CheckIdentityName(n); err == nil {
			t.Errorf("CheckIdentityName(%q) accepted", n)
		}
	}
}

// FuzzParseRemote: an accepted remote holds nothing ssh, sshfs or a shell
// reads specially, never starts with '-', and normalises to a fixed point.
func FuzzParseRemote(f *testing.F) {
	for _, s := range []string{"root@127.0.0.1:/srv/x", "[::1]:/a", "-oProxyCommand=x:/a", "h:/a,b", "u@h:/a b", "h:/a/../b", "u@[::ffff:1.2.3.4]:/x", "h:/p@q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRemote(s)
		if err != nil {
			return
		}
		n := r.String()
		if strings.HasPrefix(n, "-") || strings.HasPrefix(r.Host, "-") || strings.HasPrefix(r.User, "-") {
			t.Fatalf("%q accepted as %q: a leading '-'", s, n)
		}
		if strings.ContainsAny(n, " \t\n\r\x00,;|&$`'\"\\<>(){}*?!#") {
			t.Fatalf("%q accepted as %q with a special character", s, n)
		}
		if r.Host == "" || !strings.HasPrefix(r.Path, "/") || strings.Contains(r.Path, "/../") || strings.HasSuffix(r.Path, "/..") {
			t.Fatalf("%q accepted as %+v", s, r)
		}
		again, err := ParseRemote(n)
		if err != nil || again != r {
			t.Fatalf("%q normalises to %q, which parses as %+v, %v", s, n, again, err)
		}
	})
}
