package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/all"
)

// backendDoc is one backend as `stowage backends --format json` prints it.
type backendDoc struct {
	ID             string            `json:"id"`
	Summary        string            `json:"summary"`
	DisabledUnless string            `json:"disabled_unless,omitempty"`
	Shared         bool              `json:"shared,omitempty"`
	Options        []backend.Option  `json:"options"`
	Refused        []backend.Refused `json:"refused,omitempty"`
}

func runBackends(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stowage backends", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "text", "output format: text or json")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: stowage backends [--format text|json]\n\nLists every built-in backend with its options (-o KEY=VALUE at docker volume create). Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	reg := backend.NewRegistry(all.Modules()...)
	var docs []backendDoc
	for _, m := range reg.Modules() {
		opts := append([]backend.Option{{Name: backend.KeyBackend, Type: backend.TypeString, Help: "selects this backend: backend=" + m.ID}}, m.Options...)
		docs = append(docs, backendDoc{ID: m.ID, Summary: m.Summary, DisabledUnless: m.DisabledUnless, Shared: m.Shared, Options: opts, Refused: m.Refused})
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(docs); err != nil {
			fmt.Fprintln(stderr, "stowage backends:", err)
			return 1
		}
	case "text":
		for i, d := range docs {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "%s — %s\n", d.ID, d.Summary)
			if d.DisabledUnless != "" {
				fmt.Fprintf(stdout, "  (disabled unless the daemon setting %q is given)\n", d.DisabledUnless)
			}
			if d.Shared {
				fmt.Fprintln(stdout, "  (shared storage: a daemon with only shared backends tells Docker its scope is global)")
			}
			tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "  OPTION\tTYPE\tDEFAULT\tHELP")
			for _, o := range d.Options {
				def := o.Default
				if def == "" {
					def = "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Name, o.Type, def, strings.TrimSpace(o.Help))
			}
			tw.Flush()
			for _, r := range d.Refused {
				fmt.Fprintf(stdout, "  refused: %s — %s\n", r.Name, r.Why)
			}
		}
	default:
		fmt.Fprintf(stderr, "stowage backends: --format %q: use text or json\n", *format)
		return 2
	}
	return 0
}
