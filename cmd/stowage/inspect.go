package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"
)

func runInspect(args []string, stdout, stderr io.Writer) int {
	o, rest, rc := parseOp("inspect", `Usage: stowage inspect [--format table|json] [--socket S] [--root DIR] VOLUME

Shows one volume's record: backend, options, mount ledger, backend facts.
Asks the running daemon; when none answers, reads the state file read-only.
Flags:
`, args, stderr, 1)
	if o == nil {
		return rc
	}
	vols, source, err := o.loadVolumes()
	if err != nil {
		fmt.Fprintln(stderr, "stowage inspect:", err)
		return 1
	}
	name := rest[0]
	for _, v := range vols {
		if v.Name != name {
			continue
		}
		if o.format == "json" {
			writeJSON(stdout, map[string]interface{}{"source": source, "volume": v})
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "Name:\t%s\n", v.Name)
		fmt.Fprintf(tw, "Backend:\t%s\n", v.Backend)
		fmt.Fprintf(tw, "Created:\t%s\n", v.CreatedAt.Format(time.RFC3339))
		if v.Mountpoint != "" {
			fmt.Fprintf(tw, "Mountpoint:\t%s\n", v.Mountpoint)
		}
		fmt.Fprintf(tw, "Options:\t%s\n", optString(v.Options))
		if len(v.Private) > 0 {
			fmt.Fprintf(tw, "Backend facts:\t%s\n", optString(v.Private))
		}
		fmt.Fprintf(tw, "Mounts:\t%d\n", v.ActiveMounts())
		tw.Flush()
		ids := make([]string, 0, len(v.Mounts))
		for id := range v.Mounts {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			m := v.Mounts[id]
			fmt.Fprintf(stdout, "  %s  count %d, boot %s, since %s\n", id, m.Count, m.Boot, m.Since.Format(time.RFC3339))
		}
		return 0
	}
	fmt.Fprintf(stderr, "stowage inspect: volume %q: no such volume\n", name)
	return 1
}
