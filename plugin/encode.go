package plugin

import (
	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/jsonenc"
)

// appendGetResponse appends r as json.Encoder writes it (newline included),
// without reflection: Get is the call dockerd sends before nearly every
// other. Status values of a type it does not know are encoded by
// encoding/json itself, so the bytes are always encoding/json's (see
// TestGetEncodingMatchesEncodingJSON); ok is false only if encoding/json
// would fail too.
func appendGetResponse(b []byte, r *volume.GetResponse) ([]byte, bool) {
	b = append(b, `{"Volume":`...)
	v := r.Volume
	if v == nil {
		return append(b, "null}\n"...), true
	}
	b = jsonenc.String(append(b, `{"Name":`...), v.Name)
	if v.Mountpoint != "" {
		b = jsonenc.String(append(b, `,"Mountpoint":`...), v.Mountpoint)
	}
	if v.CreatedAt != "" {
		b = jsonenc.String(append(b, `,"CreatedAt":`...), v.CreatedAt)
	}
	if len(v.Status) > 0 {
		var ok bool
		if b, ok = jsonenc.Value(append(b, `,"Status":`...), v.Status); !ok {
			return nil, false
		}
	}
	return append(b, "}}\n"...), true
}

// plainName reads body when it is exactly {"Name":"NAME"} (and the newline
// json.Encoder ends it with), NAME printable ASCII without escapes: what
// dockerd sends for Get. Such a name decodes to its own bytes; anything
// else is for encoding/json.
func plainName(body []byte) (string, bool) {
	const pre, post = `{"Name":"`, `"}`
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	if len(body) < len(pre)+len(post) || string(body[:len(pre)]) != pre || string(body[len(body)-len(post):]) != post {
		return "", false
	}
	name := body[len(pre) : len(body)-len(post)]
	for _, c := range name {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return "", false
		}
	}
	return string(name), true
}
