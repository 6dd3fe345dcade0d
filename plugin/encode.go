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

// The plain forms' keys: {"Name":…} (Get, Remove, Path) and
// {"Name":…,"ID":…} (Mount, Unmount), in the order dockerd writes them.
var (
	nameKey    = []string{"Name"}
	nameIDKeys = []string{"Name", "ID"}
)

// plainFields reads body when it is exactly one JSON object of the string
// fields keys, in that order, each value printable ASCII without escapes,
// and a newline at most after it: what dockerd's json.Encoder writes. Such
// values decode to their own bytes, so vals get what encoding/json would
// give them; anything else leaves vals alone and is for encoding/json.
func plainFields(body []byte, keys []string, vals ...*string) bool {
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1]
	}
	if len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return false
	}
	body = body[1 : len(body)-1]
	var got [2]string
	if len(keys) > len(got) || len(vals) != len(keys) {
		return false
	}
	for i, k := range keys {
		if i > 0 {
			if len(body) == 0 || body[0] != ',' {
				return false
			}
			body = body[1:]
		}
		// "KEY":"VALUE"
		if len(body) < len(k)+4 || body[0] != '"' || string(body[1:1+len(k)]) != k || string(body[1+len(k):4+len(k)]) != `":"` {
			return false
		}
		body = body[4+len(k):]
		end := -1
		for j, c := range body {
			if c == '"' {
				end = j
				break
			}
			if c < 0x20 || c >= 0x7f || c == '\\' {
				return false
			}
		}
		if end < 0 {
			return false
		}
		got[i] = string(body[:end])
		body = body[end+1:]
	}
	if len(body) != 0 {
		return false
	}
	for i, v := range vals {
		*v = got[i]
	}
	return true
}
