package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// MaxHistoryLimit is the largest history page.
const MaxHistoryLimit = 200

// History returns the messages between user and q.With, newest first, as
// message frames. Both sides of the conversation are read from the two
// users' inboxes (a message is stored once, in its recipient's inbox).
// It returns an error wrapping ErrBadRequest for a malformed query and
// ErrUnavailable when the log cannot be read.
func (s *Service) History(ctx context.Context, user string, q chat.HistoryQuery) (chat.History, error) {
	if q.Limit < 1 || q.Limit > MaxHistoryLimit {
		return nil, fmt.Errorf("%w: limit must be 1 to %d", ErrBadRequest, MaxHistoryLimit)
	}
	if q.Group != "" {
		return s.groupHistory(ctx, user, q)
	}
	type side struct {
		subject string
		from    string // the sender whose messages this inbox holds for us
	}
	sides := []side{{natsx.Inbox(user), q.With}}
	if q.With != user {
		sides = append(sides, side{natsx.Inbox(q.With), user})
	}
	var upper uint64 // exclusive
	if q.Before != "" {
		p, ok := parseID(q.Before)
		if !ok || p.receipt {
			return nil, fmt.Errorf("%w: before must be a message id", ErrBadRequest)
		}
		upper = p.seq
	} else {
		for _, sd := range sides {
			last, err := s.lastSeq(ctx, sd.subject)
			if err != nil {
				return nil, err
			}
			upper = max(upper, last+1)
		}
	}
	type found struct {
		seq   uint64
		frame []byte
	}
	var out []found
	scanned := 0
	window := uint64(1024)
	for hi := upper; hi > 1 && len(out) < q.Limit && scanned < s.cfg.ScanLimit; window *= 4 {
		lo := uint64(1)
		if hi > window {
			lo = hi - window
		}
		for _, sd := range sides {
			for seq := lo; seq < hi; {
				var stop bool
				res, err := natsx.GetBatch(ctx, s.nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: sd.subject, Seq: seq, Batch: 256, MaxBytes: 4 << 20}, func(m *nats.Msg) error {
					n := natsx.Seq(m)
					if n >= hi {
						stop = true
						return nil
					}
					scanned++
					if m.Header.Get(HdrKind) != KindMessage || m.Header.Get(HdrFrom) != sd.from {
						return nil
					}
					r, err := decodeRecord(m, false)
					if err != nil {
						return nil
					}
					out = append(out, found{n, r.frames[0]})
					return nil
				})
				if err != nil {
					return nil, fmt.Errorf("%w: read history: %v", ErrUnavailable, err)
				}
				if stop || res.Count == 0 || res.Pending == 0 {
					break
				}
				seq = res.Last + 1
			}
		}
		hi = lo
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq > out[j].seq })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	msgs := make(chat.History, len(out))
	for i, f := range out {
		msgs[i] = f.frame
	}
	return msgs, nil
}

// groupHistory returns the messages of a group that user may see (those
// sent while it was a member), newest first.
func (s *Service) groupHistory(ctx context.Context, user string, q chat.HistoryQuery) (chat.History, error) {
	if s.groups == nil {
		return nil, fmt.Errorf("%w: no such group", ErrNotFound)
	}
	all, err := s.groups.Memberships(ctx, user, 0)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", user, err)
	}
	var ivs []chat.Interval
	for _, iv := range all {
		if iv.Group == q.Group {
			ivs = append(ivs, iv)
		}
	}
	if len(ivs) == 0 {
		return nil, fmt.Errorf("%w: no such group", ErrNotFound)
	}
	visible := func(seq uint64) bool {
		for _, iv := range ivs {
			if seq > iv.From && (iv.To == 0 || seq < iv.To) {
				return true
			}
		}
		return false
	}
	subject := natsx.Group(q.Group)
	var upper uint64
	if q.Before != "" {
		p, ok := parseID(q.Before)
		if !ok || p.receipt {
			return nil, fmt.Errorf("%w: before must be a message id", ErrBadRequest)
		}
		upper = p.seq
	} else {
		last, err := s.lastSeq(ctx, subject)
		if err != nil {
			return nil, err
		}
		upper = last + 1
	}
	var earliest uint64 = ^uint64(0)
	for _, iv := range ivs {
		earliest = min(earliest, iv.From)
	}
	type found struct {
		seq   uint64
		frame []byte
	}
	var out []found
	scanned := 0
	window := uint64(1024)
	for hi := upper; hi > earliest+1 && len(out) < q.Limit && scanned < s.cfg.ScanLimit; window *= 4 {
		lo := earliest + 1
		if hi > window && hi-window > lo {
			lo = hi - window
		}
		var got []found
		for seq := lo; seq < hi; {
			var stop bool
			res, err := natsx.GetBatch(ctx, s.nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: subject, Seq: seq, Batch: 256, MaxBytes: 4 << 20}, func(m *nats.Msg) error {
				n := natsx.Seq(m)
				if n >= hi {
					stop = true
					return nil
				}
				scanned++
				if m.Header.Get(HdrKind) != KindMessage || !visible(n) {
					return nil
				}
				if r, err := decodeRecord(m, false); err == nil {
					got = append(got, found{n, r.frames[0]})
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("%w: read group history: %v", ErrUnavailable, err)
			}
			if stop || res.Count == 0 || res.Pending == 0 {
				break
			}
			seq = res.Last + 1
		}
		out = append(out, got...)
		hi = lo
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq > out[j].seq })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	msgs := make(chat.History, len(out))
	for i, f := range out {
		msgs[i] = f.frame
	}
	return msgs, nil
}

// lastSeq is the sequence of the last record on subject, or 0.
func (s *Service) lastSeq(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	m, err := s.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+natsx.StreamMsgs, body)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "404" {
		return 0, nil
	}
	return natsx.Seq(m), nil
}

// msgHead is what a lookup by id learns about a message.
type msgHead struct {
	from, to, group string
	ts              int64
}

// lookupMessage finds the message whose id names sequence idSeq: the
// message record itself, or the copy whose sequence made the id. It returns
// nil when there is no such message.
func (s *Service) lookupMessage(ctx context.Context, idSeq uint64) (*msgHead, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var h nats.Header
	m, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, idSeq)
	switch {
	case errors.Is(err, natsx.ErrNoMessage):
		// Any replica may answer a direct get, one that lags the leader
		// too: a message just sent may not be there yet. Ask the leader
		// before saying no.
		sm, err := natsx.LeaderGet(ctx, s.nc, natsx.StreamMsgs, idSeq)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if sm == nil || sm.Header == nil {
			return nil, nil
		}
		h = sm.Header
		h.Set(natsx.HdrSubject, sm.Subject)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	default:
		h = m.Header
	}
	kind, from, to, group := h.Get(HdrKind), h.Get(HdrFrom), h.Get(HdrTo), h.Get(HdrGroup)
	if h.Get(HdrID) != "" || (to == "" && group == "") {
		return nil, nil // this record does not make an id
	}
	switch {
	case kind == KindMessage && group != "" && h.Get(natsx.HdrSubject) == natsx.Group(group):
	case kind == KindMessage && h.Get(natsx.HdrSubject) == natsx.Inbox(to):
	case kind == KindCopy && h.Get(natsx.HdrSubject) == natsx.Inbox(from):
	default:
		return nil, nil
	}
	ts, _ := strconv.ParseInt(h.Get(HdrTS), 10, 64)
	return &msgHead{from: from, to: to, group: group, ts: ts}, nil
}

// Status returns the status of the message id for its sender, user: sent,
// delivered or read per recipient, from the receipts stored in user's inbox
// after the message. Anyone but the sender gets an error wrapping
// ErrNotFound, as for a message that does not exist.
func (s *Service) Status(ctx context.Context, user, id string) (*chat.MessageStatus, error) {
	p, ok := parseID(id)
	if !ok || p.receipt {
		return nil, fmt.Errorf("%w: no message %q", ErrNotFound, id)
	}
	h, err := s.lookupMessage(ctx, p.seq)
	if err != nil {
		return nil, err
	}
	if h == nil || h.from != user {
		return nil, fmt.Errorf("%w: no message %q", ErrNotFound, id)
	}
	st := &chat.MessageStatus{ID: id, Status: wire.StatusSent, Recipients: []chat.RecipientStatus{}}
	recipients := []string{h.to}
	if h.group != "" {
		if s.groups == nil {
			return nil, fmt.Errorf("%w: no message %q", ErrNotFound, id)
		}
		members, err := s.groups.MembersAt(ctx, h.group, p.seq)
		if err != nil {
			return nil, fmt.Errorf("members of %s: %w", h.group, err)
		}
		recipients = members
	}
	rs := map[string]*chat.RecipientStatus{}
	for _, u := range recipients {
		if u != user {
			rs[u] = &chat.RecipientStatus{User: u, Status: wire.StatusSent, TS: h.ts}
		}
	}
	if len(rs) == 0 {
		return st, nil
	}
	if err := s.scanReceipts(ctx, user, p.seq, id, rs); err != nil {
		return nil, err
	}
	least := wire.StatusRead
	for _, r := range rs {
		st.Recipients = append(st.Recipients, *r)
		if statusRank(r.Status) < statusRank(least) {
			least = r.Status
		}
	}
	sort.Slice(st.Recipients, func(i, j int) bool { return st.Recipients[i].User < st.Recipients[j].User })
	st.Status = least
	return st, nil
}

// scanReceipts reads user's inbox after seq for receipts of msgID by the
// recipients in rs, raising their status. It stops when all have read it,
// at the end of the inbox, or after Config.ScanLimit records.
func (s *Service) scanReceipts(ctx context.Context, user string, seq uint64, msgID string, rs map[string]*chat.RecipientStatus) error {
	unread := len(rs)
	scanned := 0
	for from := seq + 1; unread > 0 && scanned < s.cfg.ScanLimit; {
		res, err := natsx.GetBatch(ctx, s.nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox(user), Seq: from, Batch: 512, MaxBytes: 4 << 20}, func(m *nats.Msg) error {
			scanned++
			if m.Header.Get(HdrKind) != KindReceipts || !bytes.Contains(m.Data, []byte(`"`+msgID+`"`)) {
				return nil
			}
			b, err := decodeReceiptsBody(m.Data)
			if err != nil {
				return nil
			}
			for _, it := range b.Items {
				r := rs[it.By]
				if r == nil || it.Msg != msgID || statusRank(it.Status) <= statusRank(r.Status) {
					continue
				}
				r.Status, r.TS = it.Status, it.TS
				if it.Status == wire.StatusRead {
					unread--
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: read receipts: %v", ErrUnavailable, err)
		}
		if res.Count == 0 || res.Pending == 0 {
			return nil
		}
		from = res.Last + 1
	}
	return nil
}
