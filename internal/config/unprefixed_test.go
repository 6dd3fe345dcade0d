package config

import (
	"flag"
	"io"
	"testing"
	"time"
)

func bind(env map[string]string) (*Serve, error) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := &Binder{FS: fs, Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	c := &Serve{}
	c.Bind(b)
	return c, b.Err()
}

func TestBareEnvNamesOnlyWhenAskedFor(t *testing.T) {
	c, _ := bind(map[string]string{"LOG_LEVEL": "debug"})
	if c.LogLevel != "info" {
		t.Fatalf("bare LOG_LEVEL honoured without %s: %q", EnvUnprefixed, c.LogLevel)
	}
	c, err := bind(map[string]string{EnvUnprefixed: "1", "LOG_LEVEL": "debug", "SHUTDOWN_TIMEOUT": "8s", "STOWAGE_ROOT": "/data", "ROOT": "/elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "debug" || c.ShutdownTimeout != 8*time.Second {
		t.Fatalf("bare names ignored: %q %v", c.LogLevel, c.ShutdownTimeout)
	}
	if c.Root != "/data" {
		t.Fatalf("STOWAGE_ twin must win over the bare name: %q", c.Root)
	}
	if _, err := bind(map[string]string{EnvUnprefixed: "1", "SHUTDOWN_TIMEOUT": "soon"}); err == nil {
		t.Fatal("bad bare duration accepted")
	}
}
