package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/internal/store"
)

// UsageFunc reports one volume's size limit and used bytes from a cheap
// source (statfs, a qgroup query; never a tree walk); ok is false when the
// backend has none.
type UsageFunc func(v *store.Volume) (limit, used uint64, ok bool)

var (
	volUsedDesc  = prometheus.NewDesc("stowage_volume_used_bytes", "Bytes a volume uses, from its backend's cheap usage (statfs, qgroup); only with --metrics-volume-usage.", []string{"volume", "backend"}, nil)
	volLimitDesc = prometheus.NewDesc("stowage_volume_size_limit_bytes", "A volume's size limit (absent for volumes without one); only with --metrics-volume-usage.", []string{"volume", "backend"}, nil)
)

// CollectVolumeUsage adds per-volume usage gauges, computed at scrape time.
// Two series per volume: the daemon's flag opts in, since the cardinality
// grows with the number of volumes.
func (m *Metrics) CollectVolumeUsage(u UsageFunc) {
	m.Registry.MustRegister(&usageCollector{l: m.lister, u: u})
}

type usageCollector struct {
	l Lister
	u UsageFunc
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- volUsedDesc
	ch <- volLimitDesc
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	// A read error is already reported by stowage_state_read_errors.
	_ = c.l.Scan(func(v *store.Volume) error {
		limit, used, ok := c.u(v)
		if !ok {
			return nil
		}
		ch <- prometheus.MustNewConstMetric(volUsedDesc, prometheus.GaugeValue, float64(used), v.Name, v.Backend)
		if limit > 0 {
			ch <- prometheus.MustNewConstMetric(volLimitDesc, prometheus.GaugeValue, float64(limit), v.Name, v.Backend)
		}
		return nil
	})
}
