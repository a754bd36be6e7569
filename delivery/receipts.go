package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// batcher collects the receipts for one user's messages for up to
// Config.ReceiptDelay and stores each batch as one record in that user's
// inbox: receipts cost one stored write per user and window, however many
// messages and recipients (a group's members) they cover.
type batcher struct {
	svc *Service

	mu      sync.Mutex
	batches map[string]*rbatch   // by target user
	stored  map[string]time.Time // when a record was last stored for a target, for the last ReceiptSpacing
	retry   []*rbatch            // batches whose store failed, stored again unchanged
	full    chan struct{}        // a batch filled up: store now

	pubMu sync.Mutex // one storing round at a time
}

type rbatch struct {
	target string
	id     string // Nats-Msg-Id: a retried store is deduplicated
	items  []receiptItem
	since  time.Time
}

func newBatcher(s *Service) *batcher {
	return &batcher{svc: s, batches: map[string]*rbatch{}, stored: map[string]time.Time{}, full: make(chan struct{}, 1)}
}

// add queues a receipt for target's inbox.
func (b *batcher) add(target string, it receiptItem) {
	b.mu.Lock()
	rb := b.batches[target]
	if rb == nil {
		rb = &rbatch{target: target, id: nuid.Next(), since: b.svc.cfg.Now()}
		b.batches[target] = rb
	}
	rb.items = append(rb.items, it)
	full := len(rb.items) >= maxReceiptItems
	b.mu.Unlock()
	if full || b.svc.cfg.ReceiptDelay == 0 {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

// run stores batches as they come due until ctx ends.
func (b *batcher) run(ctx context.Context) {
	tick := time.NewTicker(max(b.svc.cfg.ReceiptDelay/2, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.full:
		}
		sctx, cancel := context.WithTimeout(ctx, b.svc.cfg.PublishTimeout)
		if err := b.store(sctx, false); err != nil && ctx.Err() == nil {
			b.svc.log.Warn("store receipts", "err", err)
		}
		cancel()
	}
}

// storeChunk is how many receipts records are published before their
// acknowledgements are awaited.
const storeChunk = 64

// spread returns a random offset within a quarter of spacing either way.
// Users who start together (a node's restart, a load test) would otherwise
// have their receipts records come due in the same tick every spacing,
// a burst of stores and deliveries that holds up the messages sent
// meanwhile; shifting each next store by a random offset spreads them
// out within a few spacings, at the same average spacing.
func spread(spacing time.Duration) time.Duration {
	if spacing < 4 {
		return 0
	}
	q := int64(spacing / 4)
	return time.Duration(rand.Int64N(2*q+1) - q)
}

// flushAll stores every queued receipt and returns once they are stored.
func (b *batcher) flushAll(ctx context.Context) error {
	return b.store(ctx, true)
}

// store writes the due batches (all of them when all is set). A batch is
// due when it is ReceiptDelay old and its target had no record stored in
// the last ReceiptSpacing, or when it is full. Batches that fail to store
// are queued again with their ids, so a retry cannot duplicate them.
func (b *batcher) store(ctx context.Context, all bool) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	now := b.svc.cfg.Now()
	b.mu.Lock()
	due := b.retry
	b.retry = nil
	spacing := b.svc.cfg.ReceiptSpacing
	for k, rb := range b.batches {
		ready := now.Sub(rb.since) >= b.svc.cfg.ReceiptDelay
		if ready {
			if last, ok := b.stored[k]; ok && now.Sub(last) < spacing {
				ready = false
			}
		}
		if all || ready || len(rb.items) >= maxReceiptItems {
			due = append(due, rb)
			delete(b.batches, k)
			b.stored[k] = now.Add(spread(spacing))
		}
	}
	for k, last := range b.stored {
		if now.Sub(last) >= spacing {
			delete(b.stored, k)
		}
	}
	b.mu.Unlock()
	if len(due) == 0 {
		return nil
	}
	// Split oversized batches so each record holds at most maxReceiptItems.
	var recs []*rbatch
	for _, rb := range due {
		for len(rb.items) > maxReceiptItems {
			recs = append(recs, &rbatch{target: rb.target, id: nuid.Next(), items: rb.items[:maxReceiptItems], since: rb.since})
			rb.items = rb.items[maxReceiptItems:]
		}
		recs = append(recs, rb)
	}
	// Publish in chunks, each acknowledged before the next: a flush of
	// every user's receipts (cursor flush, shutdown) would otherwise put
	// its thousand records in JetStream's queue at once, ahead of the
	// messages users send meanwhile.
	var failed []*rbatch
	var errs []error
	start := time.Now()
	for lo := 0; lo < len(recs); lo += storeChunk {
		chunk := recs[lo:min(lo+storeChunk, len(recs))]
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			failed = append(failed, recs[lo:]...)
			break
		}
		futures := make([]jetstream.PubAckFuture, len(chunk))
		for i, rb := range chunk {
			data, err := marshalReceipts(rb.items)
			if err != nil {
				return err
			}
			h := newHeaders(4)
			h.set(hdrMsgID, "r:"+rb.id)
			h.set(HdrVersion, RecordVersion)
			h.set(HdrKind, KindReceipts)
			h.set(HdrTS, strconv.FormatInt(now.UnixMilli(), 10))
			m := &nats.Msg{Subject: natsx.Inbox(rb.target), Header: h.h, Data: data}
			futures[i], err = b.svc.js.PublishMsgAsync(m)
			if err != nil {
				errs = append(errs, err)
			}
		}
		for i, f := range futures {
			if f == nil {
				failed = append(failed, chunk[i])
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs = append(errs, err)
				failed = append(failed, chunk[i])
			case <-ctx.Done():
				errs = append(errs, ctx.Err())
				failed = append(failed, chunk[i])
			}
		}
	}
	b.svc.m.PublishLatency.Observe(time.Since(start).Seconds())
	if len(failed) > 0 {
		b.mu.Lock()
		b.retry = append(failed, b.retry...)
		b.mu.Unlock()
		return fmt.Errorf("store %d of %d receipt records: %w", len(failed), len(recs), errors.Join(errs...))
	}
	return nil
}

// statusRank orders receipt statuses.
func statusRank(s string) int {
	switch s {
	case wire.StatusRead:
		return 2
	case wire.StatusDelivered:
		return 1
	}
	return 0
}

// marshalReceipts is the stored JSON of a receipts record.
func marshalReceipts(items []receiptItem) ([]byte, error) {
	return appendReceiptsBody(make([]byte, 0, 64+len(items)*72), items), nil
}
