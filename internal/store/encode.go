package store

import (
	"encoding/json"
	"strconv"

	"github.com/stowage/stowage/internal/jsonenc"
)

// encode returns vol's record: the bytes json.Marshal writes for it, without
// reflection (a Mount and its Unmount each rewrite the record). Anything the
// hand-written path cannot write as encoding/json would goes to
// encoding/json itself, errors included.
func encode(vol *Volume) ([]byte, error) {
	if b, ok := appendRecord(make([]byte, 0, 256), vol); ok {
		return b, nil
	}
	return json.Marshal(vol)
}

func appendRecord(b []byte, v *Volume) ([]byte, bool) {
	b = jsonenc.String(append(b, `{"name":`...), v.Name)
	b = jsonenc.String(append(b, `,"backend":`...), v.Backend)
	if len(v.Options) > 0 {
		b = jsonenc.StringMap(append(b, `,"options":`...), v.Options)
	}
	t, err := v.CreatedAt.MarshalJSON()
	if err != nil {
		return nil, false
	}
	b = append(append(b, `,"created_at":`...), t...)
	if len(v.Mounts) > 0 {
		var ok bool
		if b, ok = jsonenc.Map(append(b, `,"mounts":`...), v.Mounts, appendMount); !ok {
			return nil, false
		}
	}
	if len(v.Private) > 0 {
		b = jsonenc.StringMap(append(b, `,"private":`...), v.Private)
	}
	if len(v.Requested) > 0 {
		b = jsonenc.StringMap(append(b, `,"requested":`...), v.Requested)
	}
	return append(b, '}'), true
}

func appendMount(b []byte, m Mount) ([]byte, bool) {
	b = strconv.AppendInt(append(b, `{"count":`...), int64(m.Count), 10)
	b = jsonenc.String(append(b, `,"boot":`...), m.Boot)
	t, err := m.Since.MarshalJSON()
	if err != nil {
		return nil, false
	}
	return append(append(append(b, `,"since":`...), t...), '}'), true
}
