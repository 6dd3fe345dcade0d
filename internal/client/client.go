// Package client speaks stowage's socket as dockerd does, for the operator
// commands and the tests: POST /VolumeDriver.X and /Stowage.X with JSON.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Accept is the header dockerd sends with every plugin call.
const Accept = "application/vnd.docker.plugins.v1.2+json"

// Client calls one stowage socket.
type Client struct {
	Socket string
	HTTP   *http.Client
}

// New returns a client for the unix socket at path.
func New(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 64,
	}
	return &Client{Socket: path, HTTP: &http.Client{Transport: tr, Timeout: 3 * time.Minute}}
}

// Error is an answer carrying {"Err": ...}.
type Error struct {
	Status int
	Err    string
}

func (e *Error) Error() string { return e.Err }

// Call posts req (nil sends no body) to /path and decodes the answer into
// resp (may be nil). A non-200 answer or a non-empty Err is an *Error.
func (c *Client) Call(ctx context.Context, path string, req, resp interface{}) error {
	var body io.Reader
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin.moby.localhost/"+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return err
	}
	r.Header.Set("Accept", Accept)
	res, err := c.HTTP.Do(r)
	if err != nil {
		return fmt.Errorf("calling stowage at %s: %w", c.Socket, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 256<<20))
	if err != nil {
		return err
	}
	var e struct{ Err string }
	_ = json.Unmarshal(raw, &e)
	if res.StatusCode != http.StatusOK || e.Err != "" {
		if e.Err == "" {
			e.Err = strings.TrimSpace(string(raw))
		}
		return &Error{Status: res.StatusCode, Err: e.Err}
	}
	if resp != nil {
		if err := json.Unmarshal(raw, resp); err != nil {
			return fmt.Errorf("decoding the answer of %s: %w", path, err)
		}
	}
	return nil
}
