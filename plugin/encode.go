package plugin

import (
	"encoding/json"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/docker/go-plugins-helpers/volume"
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
	b = appendString(append(b, `{"Name":`...), v.Name)
	if v.Mountpoint != "" {
		b = appendString(append(b, `,"Mountpoint":`...), v.Mountpoint)
	}
	if v.CreatedAt != "" {
		b = appendString(append(b, `,"CreatedAt":`...), v.CreatedAt)
	}
	if len(v.Status) > 0 {
		var ok bool
		if b, ok = appendValue(append(b, `,"Status":`...), v.Status); !ok {
			return nil, false
		}
	}
	return append(b, "}}\n"...), true
}

func appendValue(b []byte, v interface{}) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return appendString(b, x), true
	case bool:
		return strconv.AppendBool(b, x), true
	case int:
		return strconv.AppendInt(b, int64(x), 10), true
	case int64:
		return strconv.AppendInt(b, x, 10), true
	case uint64:
		return strconv.AppendUint(b, x, 10), true
	case map[string]string:
		return appendMap(b, x, func(b []byte, s string) ([]byte, bool) { return appendString(b, s), true })
	case map[string]interface{}:
		return appendMap(b, x, appendValue)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return append(b, raw...), true
}

// appendMap appends m as encoding/json does: keys sorted, null when nil.
func appendMap[V any](b []byte, m map[string]V, value func([]byte, V) ([]byte, bool)) ([]byte, bool) {
	if m == nil {
		return append(b, "null"...), true
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = value(append(appendString(b, k), ':'), m[k]); !ok {
			return nil, false
		}
	}
	return append(b, '}'), true
}

// appendString appends s as encoding/json does (HTML-safe escaping); plain
// ASCII, the usual case, is copied as is.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}
