package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/svcapi"
)

// Gateways is what the presence feed needs of the gateway registry
// (registry.Registry).
type Gateways interface {
	// State reports whether a gateway incarnation is alive.
	State(id string, started time.Time) (registry.State, time.Time)
	// Subscribe returns every change of the live set from now on.
	Subscribe() (<-chan registry.Event, func())
}

// PresenceFeed turns the presence package's change notices (presence.<user>,
// an internal format) into svcapi.PresenceEvent on
// jetchat.presence.v1.u.<user>, and announces every gateway that leaves as
// a svcapi.GatewayEvent. Every node runs one; a change is translated by one
// of them (a queue group).
type PresenceFeed struct {
	nc  *nats.Conn
	gws Gateways
	log *slog.Logger
	now func() time.Time
}

// NewPresenceFeed returns a feed that judges gateways with gws.
func NewPresenceFeed(nc *nats.Conn, gws Gateways, log *slog.Logger) (*PresenceFeed, error) {
	if nc == nil || gws == nil {
		return nil, errors.New("service: NewPresenceFeed needs a NATS connection and the gateway registry")
	}
	if log == nil {
		log = slog.Default()
	}
	return &PresenceFeed{nc: nc, gws: gws, log: log.With("component", "presence-feed"), now: time.Now}, nil
}

// presenceUpdate mirrors what package presence publishes on
// presence.<user> after every stored change (its record and revision).
type presenceUpdate struct {
	Rec struct {
		On map[string]struct {
			Started int64 `json:"started"` // ns
			Since   int64 `json:"since"`   // ms
		} `json:"on"`
		LastSeen int64  `json:"last_seen"`
		Privacy  string `json:"privacy"`
	} `json:"rec"`
}

// pendingGrace is how long an entry of a gateway incarnation the registry
// has not seen yet counts as online (it may have started a moment ago).
const pendingGrace = 2 * natsx.GatewayTTL

// Run translates changes until ctx ends. It returns an error when it
// cannot subscribe.
func (f *PresenceFeed) Run(ctx context.Context) error {
	events, stopEvents := f.gws.Subscribe()
	defer stopEvents()
	ch := make(chan *nats.Msg, 4096)
	sub, err := f.nc.ChanQueueSubscribe(natsx.PresencePrefix+"*", "jetchat-presence-feed", ch)
	if err != nil {
		return fmt.Errorf("service: subscribe to presence changes: %w", err)
	}
	defer sub.Unsubscribe()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			f.translate(m)
		case ev, ok := <-events:
			if !ok {
				events = nil // the registry stopped; changes still flow
				continue
			}
			if ev.Kind == registry.Left {
				f.announceGone(ev.Gateway)
			}
		}
	}
}

func (f *PresenceFeed) translate(m *nats.Msg) {
	user, ok := strings.CutPrefix(m.Subject, natsx.PresencePrefix)
	if !ok {
		return
	}
	var u presenceUpdate
	if err := json.Unmarshal(m.Data, &u); err != nil {
		f.log.Warn("undecodable presence change", "user_id", user, "err", err)
		return
	}
	now := f.now()
	ev := svcapi.PresenceEvent{V: svcapi.Version, Type: "presence", User: user, TS: now.UnixMilli()}
	last := u.Rec.LastSeen
	for gw, e := range u.Rec.On {
		st, hb := f.gws.State(gw, time.Unix(0, e.Started))
		switch {
		case st == registry.Alive,
			st == registry.Unknown && now.UnixMilli()-e.Since < pendingGrace.Milliseconds():
			ev.Gateways = append(ev.Gateways, gatewayKey(gw, e.Started))
		case st == registry.Gone && !hb.IsZero():
			last = max(last, hb.UnixMilli(), e.Since)
		default:
			last = max(last, e.Since)
		}
	}
	slices.Sort(ev.Gateways)
	ev.Online = len(ev.Gateways) > 0
	if !ev.Online && u.Rec.Privacy != "nobody" {
		ev.LastSeen = last
	}
	f.publish(natsx.PresenceFeed(user), ev)
}

func (f *PresenceFeed) announceGone(g registry.Gateway) {
	f.publish(natsx.PresenceFeedGateway, svcapi.GatewayEvent{
		V: svcapi.Version, Type: "gateway_gone",
		Gateway: gatewayKey(g.ID, g.Started.UnixNano()), LastSeen: g.Heartbeat.UnixMilli(),
	})
}

func (f *PresenceFeed) publish(subject string, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		err = f.nc.Publish(subject, b)
	}
	if err != nil {
		f.log.Warn("publish presence event", "subject", subject, "err", err)
	}
}

// gatewayKey names a gateway incarnation as registry.Key does.
func gatewayKey(id string, startedNS int64) string {
	return id + "." + strconv.FormatInt(startedNS, 10)
}
