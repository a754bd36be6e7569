package natsx

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// SyncAlways as EmbeddedConfig.SyncInterval makes JetStream fsync every write.
const SyncAlways time.Duration = 0

// EmbeddedConfig configures the nats-server that `jetchat serve` runs in
// process when no external NATS is given.
type EmbeddedConfig struct {
	// Name is the server name (the gateway id).
	Name string
	// Listen is the client address ("host:port"), or "" to accept only
	// in-process connections.
	Listen string
	// StoreDir is the JetStream storage folder.
	StoreDir string
	// SyncInterval is how often JetStream fsyncs; SyncAlways (0) fsyncs
	// every write before acknowledging it.
	SyncInterval time.Duration
}

// ErrListenTaken is returned by StartEmbedded when the client address is in use.
var ErrListenTaken = errors.New("address already in use")

// StartEmbedded starts a JetStream-enabled nats-server and waits until it
// accepts connections. The caller owns the server and must Shutdown it.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName:         cfg.Name,
		JetStream:          true,
		StoreDir:           filepath.Clean(cfg.StoreDir),
		NoSigs:             true,
		MaxPayload:         1 << 20,
		JetStreamMaxMemory: 1 << 30,
	}
	if cfg.SyncInterval == SyncAlways {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // unused with SyncAlways, but must be set
	} else {
		opts.SyncInterval = cfg.SyncInterval
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("nats listen address %q: bad port", cfg.Listen)
		}
		if port != 0 {
			// nats-server only logs a taken port; check first so the
			// operator gets a clear error instead of a node without NATS.
			l, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return nil, fmt.Errorf("nats listen address %s: %w (is another NATS server running? use --nats-listen to pick another address, or none)", cfg.Listen, ErrListenTaken)
			}
			l.Close()
		}
		opts.Host, opts.Port = host, port
		if port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded nats-server: %w", err)
	}
	s.SetLoggerV2(&slogLogger{log: log}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server did not start (listen %q, store %s)", cfg.Listen, opts.StoreDir)
	}
	return s, nil
}

// slogLogger adapts nats-server logging to slog.
type slogLogger struct{ log *slog.Logger }

func (l *slogLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Debugf(format string, v ...any)  {}
func (l *slogLogger) Tracef(format string, v ...any)  {}
