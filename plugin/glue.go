package main

import (
	"github.com/vxsafe/overlay/control"
	"github.com/vxsafe/overlay/driver"
	"github.com/vxsafe/overlay/metrics"
)

type pluginMetrics struct{ *metrics.Metrics }

func newMetrics() pluginMetrics { return pluginMetrics{metrics.New()} }

func (m pluginMetrics) Attach(d *driver.Driver, c *control.Plane) { m.Metrics.Attach(d, c) }
