package config

import "testing"

func TestBoolFromEnv(t *testing.T) {
	c, err := bind(map[string]string{"STOWAGE_METRICS_VOLUME_USAGE": "true", "STOWAGE_UI_ADDR": "127.0.0.1:9324"})
	if err != nil || !c.MetricsVolumeUsage || c.UIAddr != "127.0.0.1:9324" {
		t.Fatalf("env twins ignored: %v %v %q", err, c.MetricsVolumeUsage, c.UIAddr)
	}
	if c, _ := bind(nil); c.MetricsVolumeUsage || c.UIAddr != "" {
		t.Fatal("the web view and usage gauges must be off by default")
	}
	if _, err := bind(map[string]string{"STOWAGE_METRICS_VOLUME_USAGE": "sure"}); err == nil {
		t.Fatal("a bad boolean in the environment was accepted")
	}
}
