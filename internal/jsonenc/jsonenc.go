// Package jsonenc appends JSON exactly as encoding/json writes it, without
// reflection, for the answers dockerd asks for most (Get, List's elements).
// Values of a type it does not know go to encoding/json itself, so the bytes
// are always encoding/json's.
package jsonenc

import (
	"encoding/json"
	"sort"
	"strconv"
	"unicode/utf8"
)

// String appends s as encoding/json does (HTML-safe escaping); plain ASCII,
// the usual case, is copied as is.
func String(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// Value appends v; ok is false only if encoding/json would fail too.
func Value(b []byte, v interface{}) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return String(b, x), true
	case bool:
		return strconv.AppendBool(b, x), true
	case int:
		return strconv.AppendInt(b, int64(x), 10), true
	case int64:
		return strconv.AppendInt(b, x, 10), true
	case uint64:
		return strconv.AppendUint(b, x, 10), true
	case map[string]string:
		return StringMap(b, x), true
	case map[string]interface{}:
		return appendMap(b, x, Value)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return append(b, raw...), true
}

// StringMap appends m as encoding/json does: keys sorted, null when nil.
func StringMap(b []byte, m map[string]string) []byte {
	b, _ = appendMap(b, m, func(b []byte, s string) ([]byte, bool) { return String(b, s), true })
	return b
}

// Map appends m as encoding/json does (keys sorted, null when nil), each
// value by value; ok is false if value fails.
func Map[V any](b []byte, m map[string]V, value func([]byte, V) ([]byte, bool)) ([]byte, bool) {
	return appendMap(b, m, value)
}

func appendMap[V any](b []byte, m map[string]V, value func([]byte, V) ([]byte, bool)) ([]byte, bool) {
	if m == nil {
		return append(b, "null"...), true
	}
	// Status and options maps hold a handful of keys: sort them on the
	// stack.
	var scratch [8]string
	keys := scratch[:0]
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
		if b, ok = value(append(String(b, k), ':'), m[k]); !ok {
			return nil, false
		}
	}
	return append(b, '}'), true
}
