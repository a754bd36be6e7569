package main

import (
	"context"
	"flag"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/objectstore"
	"github.com/jetchat/jetchat/presence"
	"github.com/jetchat/jetchat/service"
)

// svcFlags are serve's flags for NATS credentials and backend services
// (docs/subjects.md, nats.conf).
type svcFlags struct {
	natsUser     string
	natsPassword string
	natsCreds    string
	bots         string
	push         bool
	pushPreview  int
}

func (f *svcFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.natsUser, "nats-user", "", "user name for --nats-url (nats.conf: jetchat)")
	fs.StringVar(&f.natsPassword, "nats-password", "", "password of --nats-user")
	fs.StringVar(&f.natsCreds, "nats-creds", "", "NATS credentials file (JWT and NKey seed) for --nats-url, instead of --nats-user")
	fs.StringVar(&f.bots, "service-bots", strings.Join(service.DefaultBots, ","), "comma-separated users backend services may send as: user ids, or prefixes ending in *")
	fs.BoolVar(&f.push, "push", false, "run the push hook: an event on jetchat.push.v1.<user> for each message stored for an offline user")
	fs.IntVar(&f.pushPreview, "push-preview", 0, "characters of the body to put in push events (0: no text leaves jetchat)")
}

// natsAuth returns the connection options of the credentials flags.
func (f *svcFlags) natsAuth() ([]nats.Option, error) {
	switch {
	case f.natsCreds != "" && (f.natsUser != "" || f.natsPassword != ""):
		return nil, usageError{"--nats-creds and --nats-user/--nats-password exclude each other"}
	case f.natsPassword != "" && f.natsUser == "":
		return nil, usageError{"--nats-password needs --nats-user"}
	case f.natsCreds != "":
		return []nats.Option{nats.UserCredentials(f.natsCreds)}, nil
	case f.natsUser != "":
		return []nats.Option{nats.UserInfo(f.natsUser, f.natsPassword)}, nil
	}
	return nil, nil
}

// services are the node's parts that serve backend services.
type services struct {
	api    *service.API
	feed   *service.PresenceFeed
	pusher *service.Pusher // nil without --push
}

// newServices builds the service API, the presence feed and (with --push)
// the push hook.
func newServices(f svcFlags, replicas int, nc *nats.Conn, js jetstream.JetStream, d *delivery.Service,
	media *objectstore.Store, tr *presence.Tracker, gs *groups.Store, reg *registry.Registry, log *slog.Logger) (*services, error) {
	var bots []string
	for _, b := range strings.Split(f.bots, ",") {
		if b = strings.TrimSpace(b); b != "" {
			bots = append(bots, b)
		}
	}
	api, err := service.NewAPI(service.Config{Bots: bots, Replicas: replicas}, nc, js, d, media, log)
	if err != nil {
		return nil, usageError{"--service-bots: " + err.Error()}
	}
	feed, err := service.NewPresenceFeed(nc, reg, log)
	if err != nil {
		return nil, err
	}
	s := &services{api: api, feed: feed}
	if f.push {
		s.pusher, err = service.NewPusher(service.PushConfig{Preview: f.pushPreview, Replicas: replicas}, nc, js, tr, gs, log)
		if err != nil {
			return nil, usageError{"--push-preview: " + err.Error()}
		}
	}
	return s, nil
}

// run runs the parts in g until ctx ends (the start of the node's drain).
func (s *services) run(g *errgroup.Group, ctx context.Context) {
	g.Go(func() error { return s.api.Run(ctx) })
	g.Go(func() error { return s.feed.Run(ctx) })
	if s.pusher != nil {
		g.Go(func() error { return s.pusher.Run(ctx) })
	}
}
