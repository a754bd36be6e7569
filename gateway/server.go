package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/metrics"
)

// Config tunes the gateway. Zero fields take the defaults of Defaults.
type Config struct {
	// ID names this gateway in hello frames and routes.
	ID string
	// PublicURL is the WebSocket URL clients should use for this gateway
	// (ws://host:port/v1/ws). Empty: derived from each request's Host.
	PublicURL string
	// EnforceOwnership refuses a WebSocket of a user that another gateway
	// owns (Deps.Router) with 421 naming the owner, and closes the sessions
	// of users that move to another gateway with CloseMoved (route.go).
	EnforceOwnership bool
	// SendRate is the sustained sends per second allowed per user.
	SendRate float64
	// SendBurst is how many sends a user may make at once.
	SendBurst int
	// QueueFrames and QueueBytes bound a session's send queue; a live
	// session whose queue overflows is closed (the client reconnects and
	// catches up from the log).
	QueueFrames int
	QueueBytes  int
	// PingInterval is how often the server pings an idle client; a client
	// that answers nothing for PingInterval+PongWait is dropped.
	PingInterval time.Duration
	PongWait     time.Duration
	// IdlePark (Linux) is how long a session reads no data frame before
	// it is parked (no goroutine until its client's next bytes), and how
	// often the gateway checks its sessions for that; default 2 s.
	IdlePark time.Duration
	// WriteTimeout bounds writing to a client: a batch of frames fails when
	// it is not written by a deadline between WriteTimeout/2 and
	// WriteTimeout after it started.
	WriteTimeout time.Duration
	// RequestTimeout bounds the storage calls of one frame or request.
	RequestTimeout time.Duration
	// ReadBufferSize and WriteBufferSize are the WebSocket I/O buffers
	// (the read buffer at least 512 bytes); write buffers are pooled, so
	// idle sessions hold none.
	ReadBufferSize  int
	WriteBufferSize int
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		ID:              "gw-1",
		SendRate:        30,
		SendBurst:       60,
		QueueFrames:     8192,
		QueueBytes:      8 << 20,
		PingInterval:    25 * time.Second,
		PongWait:        15 * time.Second,
		IdlePark:        2 * time.Second,
		WriteTimeout:    10 * time.Second,
		RequestTimeout:  15 * time.Second,
		ReadBufferSize:  minReadBuffer,
		WriteBufferSize: 4096,
	}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.ID == "" {
		c.ID = d.ID
	}
	if c.SendRate == 0 {
		c.SendRate = d.SendRate
	}
	if c.SendBurst == 0 {
		c.SendBurst = d.SendBurst
	}
	if c.QueueFrames == 0 {
		c.QueueFrames = d.QueueFrames
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = d.QueueBytes
	}
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.PongWait == 0 {
		c.PongWait = d.PongWait
	}
	if c.IdlePark == 0 {
		c.IdlePark = d.IdlePark
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.ReadBufferSize == 0 {
		c.ReadBufferSize = d.ReadBufferSize
	}
	if c.WriteBufferSize == 0 {
		c.WriteBufferSize = d.WriteBufferSize
	}
	return c
}

// Server is a gateway: the HTTP API and the WebSocket sessions of one node.
type Server struct {
	cfg      Config
	delivery Delivery
	keys     Verifier
	checks   []Check
	groups   Groups
	presence Presence
	media    Media
	router   Router
	m        *metrics.Metrics
	log      *slog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux

	ctx    context.Context // lives until Shutdown completes
	cancel context.CancelFunc
	wg     sync.WaitGroup // session goroutines
	runner *runner        // sessions' writers and frame workers
	// writers counts the sessions' writers running now (see session.write).
	writers atomic.Int32
	poller  *poller // idle sessions' waits for bytes; nil where there is none

	mu       sync.Mutex
	sessions map[*session]struct{}
	limiters map[string]*userLimiter
	draining bool
}

type userLimiter struct {
	lim  *rate.Limiter
	refs int
}

// New returns a gateway over deps.
func New(cfg Config, deps Deps, m *metrics.Metrics, log *slog.Logger) (*Server, error) {
	if deps.Delivery == nil || deps.Keys == nil || m == nil {
		return nil, errors.New("gateway: New needs delivery, a token verifier and metrics")
	}
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		delivery: deps.Delivery,
		keys:     deps.Keys,
		checks:   deps.Checks,
		groups:   deps.Groups,
		presence: deps.Presence,
		media:    deps.Media,
		router:   deps.Router,
		m:        m,
		log:      log.With("component", "gateway", "gateway", cfg.ID),
		ctx:      ctx,
		cancel:   cancel,
		sessions: map[*session]struct{}{},
		limiters: map[string]*userLimiter{},
	}
	s.upgrader = websocket.Upgrader{
		// 0: gorilla reads frames from the buffer the session's
		// corkWriter hands it (cfg.ReadBufferSize, at least 512 bytes).
		ReadBufferSize:  0,
		WriteBufferSize: cfg.WriteBufferSize,
		WriteBufferPool: &sync.Pool{},
		// Tokens are bearer tokens, not cookies: a foreign page cannot
		// borrow a user's session, so any origin may connect.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.runner = newRunner(ctx.Done(), &s.wg)
	if p, err := newPoller(); err != nil {
		s.log.Warn("idle sessions will each keep a reader goroutine", "err", err)
	} else if p != nil {
		s.poller = p
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := p.run(); err != nil {
				s.log.Error("idle sessions' poller failed; sessions now wait in their readers", "err", err)
			}
		}()
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.wg.Add(1)
	go s.pingLoop()
	if cfg.EnforceOwnership && s.router != nil {
		s.wg.Add(1)
		go s.routeLoop()
	}
	return s, nil
}

// pingLoop pings every session each PingInterval until Shutdown: one timer
// for the whole gateway instead of one per session. Where the gateway has a
// poller, it also sweeps the sessions every IdlePark: a session idle that
// long is parked (nudge), and a parked one whose read deadline has passed
// gets a reader, which finds it so.
func (s *Server) pingLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	var sweep <-chan time.Time
	if s.poller != nil {
		st := time.NewTicker(s.cfg.IdlePark)
		defer st.Stop()
		sweep = st.C
	}
	for {
		ping := false
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			ping = true
		case <-sweep:
		}
		s.mu.Lock()
		sessions := make([]*session, 0, len(s.sessions))
		for ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		for _, ss := range sessions {
			if ping {
				ss.ping()
			}
			switch {
			case !ss.parked.Load():
				if ss.idleFor() >= s.cfg.IdlePark {
					ss.nudge()
				}
			case ss.deadlinePassed():
				ss.wake()
			}
		}
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.Registry, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /v1/ws", s.authed(s.owned(s.handleWS)))
	s.mux.HandleFunc("GET /v1/route", s.authed(s.handleRoute))
	s.mux.HandleFunc("GET /v1/messages", s.authed(s.handleHistory))
	s.mux.HandleFunc("GET /v1/messages/{id}", s.authed(s.handleStatus))
	s.groupsRoutes()
	s.presenceRoutes()
	s.mediaRoutes()
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.writeCode(w, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// Handle adds an authenticated endpoint (for the components that bring
// their own HTTP calls).
func (s *Server) Handle(pattern string, h func(w http.ResponseWriter, r *http.Request, c auth.Claims)) {
	s.mux.HandleFunc(pattern, s.authed(h))
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Sessions is the number of open WebSocket sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown stops accepting sessions, lets every session finish the frame it
// is handling (in-flight sends complete and are answered), closes each with
// 1001 (going away) and waits for their goroutines, or until ctx ends. It is
// safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.drain()
	}
	done := make(chan struct{})
	go func() {
		for _, ss := range sessions {
			<-ss.done
		}
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, ss := range sessions {
			ss.conn.Close()
			ss.wake()
		}
		<-done
	}
	s.cancel() // stops the ping loop and the runner's idle goroutines
	if s.poller != nil {
		s.poller.close()
	}
	s.wg.Wait()
	return err
}

// authed wraps a handler with token authentication: a missing, malformed,
// expired or badly signed token is answered 401 before anything else.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, c auth.Claims)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := ""
		if a := r.Header.Get("Authorization"); a != "" {
			scheme, rest, ok := strings.Cut(a, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				s.writeCode(w, "unauthorized", "the Authorization header must be 'Bearer TOKEN'")
				return
			}
			tok = strings.TrimSpace(rest)
		} else {
			tok = r.URL.Query().Get("access_token")
		}
		c, err := s.keys.Verify(tok)
		if err != nil {
			msg := "invalid or expired token"
			if errors.Is(err, auth.ErrMissing) {
				msg = "a token is required: Authorization: Bearer TOKEN or ?access_token=TOKEN"
			}
			s.writeCode(w, "unauthorized", msg)
			return
		}
		h(w, r, c)
	}
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	status := http.StatusOK
	res := map[string]string{}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		status = http.StatusServiceUnavailable
		res["gateway"] = "draining"
	}
	for _, c := range s.checks {
		if err := c.Check(ctx); err != nil {
			status = http.StatusServiceUnavailable
			res[c.Name] = err.Error()
		} else {
			res[c.Name] = "ok"
		}
	}
	writeJSON(w, status, res)
}

// acquireLimiter returns the send limiter of user, shared by its sessions.
func (s *Server) acquireLimiter(user string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[user]
	if l == nil {
		l = &userLimiter{lim: rate.NewLimiter(rate.Limit(s.cfg.SendRate), s.cfg.SendBurst)}
		s.limiters[user] = l
	}
	l.refs++
	return l.lim
}

func (s *Server) releaseLimiter(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.limiters[user]; l != nil {
		if l.refs--; l.refs <= 0 {
			delete(s.limiters, user)
		}
	}
}
