package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/metrics"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pg"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/internal/ring"
	"github.com/jetchat/jetchat/objectstore"
	"github.com/jetchat/jetchat/presence"
)

// serveFlags are the flags of serve.
type serveFlags struct {
	keys keyFlags
	logs logFlags
	svc  svcFlags // NATS credentials and backend services (services.go)

	httpAddr                     string
	natsURL                      string
	natsListen                   string
	fsync                        syncFlag
	databaseURL                  string
	gatewayID                    string
	publicURL                    string
	enforce                      bool
	replicas                     int
	retention                    time.Duration
	dedupWindow                  time.Duration
	storeDedupWindow             time.Duration
	sendRate                     float64
	sendBurst                    int
	window                       int
	receiptDelay, receiptSpacing time.Duration
	cursorFlush                  time.Duration
	shutdown                     time.Duration
	debugAddr                    string
	maxFollows                   int
	maxMembers                   int
	mediaMax                     int64
	mediaGrace                   time.Duration
	mediaKeep                    time.Duration
	longBacklog                  int
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	f.keys.register(fs)
	f.logs.register(fs)
	f.svc.register(fs)
	host, _ := os.Hostname()
	if host == "" {
		host = "gw-1"
	}
	fs.StringVar(&f.httpAddr, "http", ":8080", "HTTP and WebSocket listen address")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS servers to use (comma-separated URLs) instead of the embedded one")
	fs.StringVar(&f.natsListen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server, or none for in-process only")
	fs.Var(&f.fsync, "fsync", `embedded JetStream durability: "always" (fsync every write before acknowledging it) or an interval such as 1s`)
	fs.StringVar(&f.databaseURL, "database-url", "", "Postgres URL (default: $DATABASE_URL, else "+pg.DefaultURL+")")
	fs.StringVar(&f.gatewayID, "gateway-id", host, "this gateway's id (unique per gateway)")
	fs.StringVar(&f.publicURL, "public-url", "", "WebSocket URL clients use for this gateway (default: from the request's Host)")
	fs.BoolVar(&f.enforce, "enforce-ownership", false, "refuse a WebSocket of a user that another gateway owns on the ring with 421 naming the owner, and close (4002) the sessions of users that move to another gateway")
	fs.IntVar(&f.replicas, "replicas", 1, "replicas of every stream and bucket (3 on a 3-node NATS cluster)")
	fs.DurationVar(&f.retention, "retention", 30*24*time.Hour, "how long messages and receipts are kept")
	fs.DurationVar(&f.dedupWindow, "dedup-window", 15*time.Minute, "how long a repeated send (same user and cid) is recognised")
	fs.DurationVar(&f.storeDedupWindow, "dedup-store-window", 15*time.Second, "the message log's own duplicate window, in the NATS servers' memory: a send's retries (10s), and the moment until every gateway has read another's send index or, after a crash, the log's last sends (the rest of --dedup-window is in the gateways' send index); at least 15s, and --dedup-window when that is shorter")
	fs.Float64Var(&f.sendRate, "send-rate", 30, "sends per second allowed per user")
	fs.IntVar(&f.sendBurst, "send-burst", 60, "sends a user may make at once")
	fs.IntVar(&f.window, "window", 4096, "records a device may hold unacknowledged before delivery to it pauses")
	fs.IntVar(&f.longBacklog, "long-backlog", 256, "records still waiting after a catch-up's first read of a source that make it read on through a consumer of its own (cheaper per record, two requests more; -1: never, 0: the default)")
	fs.DurationVar(&f.receiptDelay, "receipt-delay", 100*time.Millisecond, "how long receipts to one sender are batched into one stored record")
	fs.DurationVar(&f.receiptSpacing, "receipt-spacing", time.Second, "time between two receipt records stored for one user, give or take a quarter (a busy user's receipts share one record per spacing)")
	fs.DurationVar(&f.cursorFlush, "cursor-flush", 10*time.Second, "how often acknowledged positions are stored (a crash redelivers at most this much)")
	fs.DurationVar(&f.shutdown, "shutdown-timeout", 20*time.Second, "how long a SIGTERM drain may take")
	fs.IntVar(&f.maxMembers, "group-max-members", 1024, "most members a group may have")
	fs.Int64Var(&f.mediaMax, "media-max-size", 100<<20, "largest media upload, in bytes")
	fs.DurationVar(&f.mediaGrace, "media-grace", 24*time.Hour, "media that no message references is removed this long after upload")
	fs.DurationVar(&f.mediaKeep, "media-retention", 0, "media is removed this long after the last message that carries it (default: --retention)")
	fs.IntVar(&f.maxFollows, "presence-max-follows", 1000, "users one session may follow with presence_subscribe")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve Go pprof profiles on this address (keep it private), e.g. 127.0.0.1:6060")
}

// serveFlagSet returns the flag set of serve and the flags it fills.
func serveFlagSet(stderr io.Writer) (*flag.FlagSet, *serveFlags) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	f.register(fs)
	return fs, &f
}

// serve runs a node until ctx ends, then drains it.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, f := serveFlagSet(stderr)
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	log, err := f.logs.logger(stderr)
	if err != nil {
		return err
	}
	if f.replicas < 1 {
		return usageError{"--replicas must be at least 1"}
	}
	if f.dedupWindow > f.retention {
		return usageError{"--dedup-window must not be longer than --retention (JetStream forgets a record's id when the record expires)"}
	}
	if f.storeDedupWindow < natsx.MinStoreDedupWindow && f.storeDedupWindow < f.dedupWindow {
		return usageError{"--dedup-store-window must be at least 15s (a send's retries, and the gateways' reading of each other's send index or of a crashed one's last sends), or cover --dedup-window"}
	}
	if err := os.MkdirAll(f.keys.data, 0o755); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	keys, err := f.keys.keys()
	if err != nil {
		return fmt.Errorf("token keys: %w", err)
	}

	// NATS: embedded or external.
	var ns *server.Server
	var deliverySvc atomic.Pointer[delivery.Service]
	var tracker atomic.Pointer[presence.Tracker]
	// Each connection's handlers redo what its own subscriptions may have
	// missed (records dropped for a slow consumer, or lost while it
	// reconnected): the delivery connection carries the live records, the
	// other presence.
	connOptions := func(name, what string, resync func()) []nats.Option {
		return []nats.Option{
			nats.Name(name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrSlowConsumer) {
					log.Warn("records dropped: resyncing "+what, "conn", name, "err", err)
					resync()
					return
				}
				log.Warn("nats", "conn", name, "err", err)
			}),
			nats.ReconnectHandler(func(*nats.Conn) {
				log.Info("reconnected to NATS: resyncing "+what, "conn", name)
				resync()
			}),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("disconnected from NATS", "conn", name, "err", err)
				}
			}),
		}
	}
	natsOpts := append(connOptions("jetchat "+f.gatewayID, "presence", func() {
		if t := tracker.Load(); t != nil {
			t.Resync()
		}
	}), nats.ReconnectBufSize(64<<20))
	// The delivery service has a connection of its own that buffers
	// nothing while it reconnects (natsx.StoreConnOptions): a message store
	// lands while its send waits, or never. Its live records and its stores'
	// answers come in on it together, as the hot path's only connection.
	// The rest of the node (presence, groups, media, the registry, the
	// service API) keeps a reconnect buffer.
	deliveryOpts := append(connOptions("jetchat "+f.gatewayID+" delivery", "devices from the log", func() {
		if d := deliverySvc.Load(); d != nil {
			d.Resync()
		}
	}), natsx.StoreConnOptions()...)
	var nc, dnc *nats.Conn
	if f.natsURL == "" {
		listen := f.natsListen
		if listen == "none" {
			listen = ""
		}
		ns, err = natsx.StartEmbedded(natsx.EmbeddedConfig{
			Name:         f.gatewayID,
			Listen:       listen,
			StoreDir:     filepath.Join(f.keys.data, "nats"),
			SyncInterval: f.fsync.interval,
		}, log.With("component", "nats-server"))
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		nc, err = nats.Connect("", append(natsOpts, nats.InProcessServer(ns))...)
		if err == nil {
			dnc, err = nats.Connect("", append(deliveryOpts, nats.InProcessServer(ns))...)
		}
	} else {
		auth, aerr := f.svc.natsAuth()
		if aerr != nil {
			return aerr
		}
		nc, err = nats.Connect(f.natsURL, append(append(natsOpts, auth...), nats.Timeout(5*time.Second))...)
		if err == nil {
			dnc, err = nats.Connect(f.natsURL, append(deliveryOpts, auth...)...)
		}
	}
	if nc != nil {
		defer nc.Close()
	}
	if dnc != nil {
		defer dnc.Close()
	}
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", f.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	djs, err := jetstream.New(dnc)
	if err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res, err := natsx.Ensure(ectx, js, natsx.Settings{Replicas: f.replicas, Retention: f.retention, DedupWindow: f.dedupWindow, StoreDedupWindow: f.storeDedupWindow})
	cancel()
	if err != nil {
		return fmt.Errorf("set up JetStream (is JetStream enabled on %s?): %w", orEmbedded(f.natsURL), err)
	}

	// Postgres: the pool connects lazily; the database and schema are made
	// in the background so that 1:1 messaging works while Postgres is down.
	dbURL := databaseURL(f.databaseURL, getenv)
	pool, err := pg.NewPool(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	gstore, err := groups.New(groups.Config{MaxMembers: f.maxMembers}, pool, nc, js, log)
	if err != nil {
		return err
	}

	keep := f.mediaKeep
	if keep == 0 {
		keep = f.retention
	}
	media, err := objectstore.New(objectstore.Config{MaxSize: f.mediaMax, GracePeriod: f.mediaGrace, Retention: keep}, nc, res.Media, res.MediaACL, gstore, log)
	if err != nil {
		return err
	}

	m := metrics.New()
	dsvc, err := delivery.New(delivery.Config{
		Window:         f.window,
		LongBacklog:    f.longBacklog,
		ReceiptDelay:   f.receiptDelay,
		ReceiptSpacing: f.receiptSpacing,
		CursorFlush:    f.cursorFlush,
		GatewayID:      ident.TokenFrom(f.gatewayID),
	}, dnc, djs, res, gstore, m, log)
	if err != nil {
		return err
	}
	deliverySvc.Store(dsvc)

	reg, err := registry.New(registry.Config{}, js, res.Gateways, registry.Gateway{ID: f.gatewayID, URL: advertisedURL(f.publicURL, f.httpAddr)}, log)
	if err != nil {
		return err
	}
	tr, err := presence.New(presence.Config{MaxFollows: f.maxFollows}, nc, res.Presence, reg, log)
	if err != nil {
		return err
	}
	tracker.Store(tr)

	// Backend services: the service API, the presence feed, the push hook.
	svcs, err := newServices(f.svc, f.replicas, nc, js, dsvc, media, tr, gstore, reg, log)
	if err != nil {
		return err
	}
	owners := ring.NewTracker(reg, log)

	gw, err := gateway.New(gateway.Config{
		ID:               f.gatewayID,
		PublicURL:        f.publicURL,
		EnforceOwnership: f.enforce,
		SendRate:         f.sendRate,
		SendBurst:        f.sendBurst,
	}, gateway.Deps{Delivery: dsvc, Keys: keys, Presence: tr, Groups: gstore, Media: media, Router: owners, Checks: []gateway.Check{
		{Name: "nats", Check: func(ctx context.Context) error {
			if !nc.IsConnected() {
				return errors.New("not connected")
			}
			if !dnc.IsConnected() {
				return errors.New("the delivery connection is not connected")
			}
			_, err := js.AccountInfo(ctx)
			return err
		}},
		{Name: "postgres", Check: func(ctx context.Context) error { return pool.Ping(ctx) }},
		// Backend services reach the node over NATS: until the service
		// API has subscribed, their requests find no responders.
		readyWhen("service_api", svcs.api.Ready(), "the service API is not subscribed yet"),
		// Sends wait until the send index holds the dedup window, and
		// are refused while its keys cannot be stored or it reads the log
		// after a failed store.
		{Name: "send_index", Check: func(context.Context) error { return dsvc.SendIndexState() }},
		// Until the live gateways are loaded the ring is empty and routing
		// fails open (every user is this gateway's): not ready for traffic.
		readyWhen("gateways", reg.Ready(), "the live gateways are not loaded yet"),
	}}, m, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.httpAddr, err)
	}
	httpSrv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}
	log.Info("jetchat node started", "http", ln.Addr().String(), "gateway", f.gatewayID, "enforce_ownership", f.enforce,
		"nats", orEmbedded(f.natsURL), "nats_listen", f.natsListen, "fsync", f.fsync.String(), "data", f.keys.data)
	fmt.Fprintf(stdout, "jetchat listening on %s\n", ln.Addr())

	if f.debugAddr != "" {
		dl, err := net.Listen("tcp", f.debugAddr)
		if err != nil {
			return fmt.Errorf("listen on --debug-addr %s: %w", f.debugAddr, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		dsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go dsrv.Serve(dl)
		defer dsrv.Close()
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error { return dsvc.Run(runCtx) })
	regCtx, stopReg := context.WithCancel(context.Background())
	defer stopReg()
	trCtx, stopTracker := context.WithCancel(context.Background())
	defer stopTracker()
	trDone := make(chan struct{})
	g.Go(func() error { defer close(trDone); return tr.Run(trCtx) })
	regDone := make(chan struct{})
	g.Go(func() error { defer close(regDone); return reg.Run(regCtx) })
	g.Go(func() error { return owners.Run(regCtx) })
	// The only gateway receives every user's live records anyway: one
	// subscription for all of them instead of one per online user. Not
	// followed once the drain starts (this gateway leaving its own ring
	// would otherwise subscribe every user it is closing).
	g.Go(func() error {
		dsvc.FollowGateways(gctx, owners.Changed, func() bool { return owners.Ring().Only(f.gatewayID) })
		return nil
	})
	// A gateway that crashed may not have stored the keys of its last
	// sends in the send index's stream: read them from the message log.
	regEvents, stopRegEvents := reg.Subscribe()
	g.Go(func() error {
		defer stopRegEvents()
		for {
			select {
			case <-gctx.Done():
				return nil
			case ev, ok := <-regEvents:
				if !ok {
					return nil
				}
				if ev.Kind == registry.Left && ev.Expired && ev.Gateway.ID != f.gatewayID {
					if err := dsvc.IndexRecentSends(gctx); err != nil && gctx.Err() == nil {
						log.Warn("read a crashed gateway's last sends into the send index", "gateway", ev.Gateway.ID, "err", err)
					}
				}
			}
		}
	})
	grCtx, stopGroups := context.WithCancel(context.Background())
	defer stopGroups()
	g.Go(func() error { return gstore.Run(grCtx) })
	g.Go(func() error { return media.Run(grCtx) })
	svcs.run(g, gctx) // ends as the drain starts; NATS closes after g.Wait
	g.Go(func() error { migrateLoop(gctx, pool, dbURL, log); return nil })
	g.Go(func() error {
		<-gctx.Done()
		// Drain in a fixed order under one timeout: leave the registry (so
		// the ring routes this gateway's users elsewhere before they
		// reconnect), stop accepting, finish in-flight sends and close
		// sessions (1001), store receipts and cursors, then let the
		// deferred closes stop NATS and Postgres.
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), f.shutdown)
		defer cancel()
		stopReg() // writes this gateway's stopped entry
		select {
		case <-regDone:
		case <-sctx.Done():
		}
		httpSrv.Shutdown(sctx)
		if err := gw.Shutdown(sctx); err != nil {
			log.Warn("gateway drain", "err", err)
		}
		stopTracker()
		<-trDone
		stopRun()
		stopGroups()
		return nil
	})
	err = g.Wait()
	if err == nil && ctx.Err() != nil {
		log.Info("stopped")
		return nil
	}
	return err
}

// migrateLoop creates the database and applies migrations, retrying while
// Postgres is unreachable.
func migrateLoop(ctx context.Context, pool *pgxpool.Pool, url string, log *slog.Logger) {
	wait := time.Second
	for {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := pg.EnsureDatabase(mctx, url)
		if err == nil {
			var n int
			n, err = pg.Migrate(mctx, pool, pg.Migrations())
			if err == nil {
				cancel()
				log.Info("database ready", "migrations_applied", n)
				return
			}
		}
		cancel()
		log.Warn("postgres not ready; 1:1 messaging works meanwhile, retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// advertisedURL is the WebSocket URL this gateway registers for routing.
func advertisedURL(public, httpAddr string) string {
	if public != "" {
		return public
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host, _ = os.Hostname()
	}
	return "ws://" + net.JoinHostPort(host, port) + "/v1/ws"
}

func orEmbedded(url string) string {
	if url == "" {
		return "embedded"
	}
	return url
}

// readyWhen is a readiness check that passes once ready is closed and
// reports notYet until then.
func readyWhen(name string, ready <-chan struct{}, notYet string) gateway.Check {
	return gateway.Check{Name: name, Check: func(context.Context) error {
		select {
		case <-ready:
			return nil
		default:
			return errors.New(notYet)
		}
	}}
}
