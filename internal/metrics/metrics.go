// Package metrics declares jetchat's Prometheus metrics in one place. Every
// component receives the *Metrics that main creates and registers on its own
// registry (never the global one), which /metrics serves.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"regexp"
)

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	// Connections is the number of open WebSocket sessions.
	Connections prometheus.Gauge
	// FramesIn counts client frames by type ("invalid" for undecodable ones).
	FramesIn *prometheus.CounterVec
	// FramesOut counts frames queued to clients.
	FramesOut prometheus.Counter
	// SessionWrites counts the writes of queued frames to clients'
	// connections; one write carries one or more frames.
	SessionWrites prometheus.Counter
	// MessagesSent counts messages durably stored (answered with sent).
	MessagesSent prometheus.Counter
	// MessagesDelivered counts delivered receipts: the first ack of a message
	// by any device of a recipient.
	MessagesDelivered prometheus.Counter
	// MessagesRead counts read receipts.
	MessagesRead prometheus.Counter
	// DeliveryLatency is the time from a message's acceptance to its frame
	// being queued for a live device.
	DeliveryLatency prometheus.Histogram
	// PublishLatency is the time JetStream takes to acknowledge a write.
	PublishLatency prometheus.Histogram
	// Errors counts errors answered to clients, by code.
	Errors *prometheus.CounterVec
	// SlowClosed counts sessions closed because their send queue was full.
	SlowClosed prometheus.Counter
	// MissedRecords counts the device sources (inbox, groups) in which the
	// check against the log's leader found a record that the device's
	// catch-up read and the live copies both missed.
	MissedRecords prometheus.Counter
	// BacklogReaders counts catch-up sources read through a consumer of
	// their own because their backlog was long (delivery.Config.LongBacklog).
	BacklogReaders prometheus.Counter
	// SendIndexEntries is the number of sends the send index holds (the
	// whole cluster's sends of the dedup window); SendIndexBytes the memory
	// its tables take.
	SendIndexEntries prometheus.Gauge
	SendIndexBytes   prometheus.Gauge
	// SendIndexRereads counts the reads of the message log's last sends
	// into the send index after start: another gateway's records stopped
	// without a goodbye (a crash, a partition), or its registry entry
	// expired.
	SendIndexRereads prometheus.Counter
}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	latency := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		Registry: r,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetchat_connections", Help: "Open WebSocket sessions."}),
		FramesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetchat_frames_in_total", Help: "Frames received from clients, by type."}, []string{"type"}),
		FramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_frames_out_total", Help: "Frames queued to clients."}),
		SessionWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_session_writes_total", Help: "Writes of queued frames to clients' connections (each carries one or more frames)."}),
		MessagesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_messages_sent_total", Help: "Messages durably stored and answered with sent."}),
		MessagesDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_messages_delivered_total", Help: "Delivered receipts produced (first device ack per recipient)."}),
		MessagesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_messages_read_total", Help: "Read receipts produced."}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jetchat_delivery_latency_seconds", Help: "Time from a message's acceptance to its frame being queued for a live device.", Buckets: latency}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jetchat_jetstream_publish_latency_seconds", Help: "Time for JetStream to acknowledge a stored write.", Buckets: latency}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetchat_errors_total", Help: "Errors answered to clients, by code."}, []string{"code"}),
		SlowClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_slow_sessions_closed_total", Help: "Sessions closed because their send queue was full."}),
		MissedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_missed_records_total", Help: "Device sources (inbox, groups) in which the check against the message log's leader found a record that both the catch-up read and the live copies missed."}),
		BacklogReaders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_catchup_backlog_readers_total", Help: "Catch-up sources read through a consumer of their own because their backlog was long."}),
		SendIndexEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetchat_send_index_entries", Help: "Sends held by the send index (every gateway's sends of the dedup window), expired ones not yet dropped included."}),
		SendIndexBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetchat_send_index_bytes", Help: "Memory held by the send index's tables (no pointers: not scanned by the collector)."}),
		SendIndexRereads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetchat_send_index_rereads_total", Help: "Reads of the message log's last sends into the send index after start, because another gateway's send index records stopped without a goodbye or its registry entry expired."}),
	}
	r.MustRegister(
		// go_gc_heap_live_bytes: the heap the last GC found live, the
		// figure that shows whether memory holds steady (heap in use
		// swings with the garbage between collections).
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.FramesIn, m.FramesOut, m.SessionWrites, m.MessagesSent, m.MessagesDelivered, m.MessagesRead,
		m.DeliveryLatency, m.PublishLatency, m.Errors, m.SlowClosed, m.MissedRecords, m.BacklogReaders,
		m.SendIndexEntries, m.SendIndexBytes, m.SendIndexRereads,
	)
	return m
}
