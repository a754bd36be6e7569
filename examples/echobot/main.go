// Command echobot is an example backend service for jetchat: a bot user
// (bot-echo) that answers every message sent to it with the same text.
//
// It uses only what any backend service gets (docs/subjects.md, package
// svcapi): its own NATS credentials (user svc-echo in nats.conf), a durable
// pull consumer on its bot's inbox made through the service API, and the
// send API. Run as many instances as you like: they share the consumer, so
// each message is answered once, and an instance that dies leaves its
// unacked messages to the others.
//
//	echobot --nats-url nats://127.0.0.1:4222 --nats-user svc-echo --nats-password "$SVC_ECHO_PASSWORD"
//
// Every flag has an environment variable: --nats-url is ECHOBOT_NATS_URL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/svcapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "echobot:", err)
		os.Exit(1)
	}
}

// config is the bot's configuration.
type config struct {
	natsURL, user, password string
	bot, consumer           string
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("echobot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.natsURL, "nats-url", nats.DefaultURL, "NATS servers of the jetchat cluster")
	fs.StringVar(&c.user, "nats-user", "svc-echo", "NATS user of this service (nats.conf)")
	fs.StringVar(&c.password, "nats-password", "", "its password")
	fs.StringVar(&c.bot, "bot", "bot-echo", "the bot user that answers")
	fs.StringVar(&c.consumer, "consumer", "svc-echo", "the durable consumer the instances share")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv("ECHOBOT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))); v != "" && !set[f.Name] {
			fs.Set(f.Name, v)
		}
	})
	return c, nil
}

// makeConsumer asks jetchat for the bot's consumer. No answer means no node
// serves the service API yet (the bot started first, or the nodes are
// restarting): it asks again, for up to 30 s.
func makeConsumer(ctx context.Context, api *svcapi.Client, c config, log *slog.Logger) (jetstream.Consumer, error) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		cons, err := api.Consumer(tctx, c.consumer, svcapi.UserScope(c.bot), svcapi.ConsumerConfig{})
		if !errors.Is(err, nats.ErrNoResponders) {
			return cons, err
		}
		log.Info("no jetchat node answers yet; asking again", "in", wait)
		select {
		case <-tctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err() // stopped while waiting
			}
			return nil, fmt.Errorf("%w (no jetchat node answered for 30 s)", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// run answers messages until ctx ends, then finishes the one in hand.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("bot", c.bot)
	nc, err := nats.Connect(c.natsURL, nats.UserInfo(c.user, c.password), svcapi.Inbox(c.user),
		nats.MaxReconnects(-1), nats.Name("echobot "+c.bot))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	api, err := svcapi.NewClient(nc)
	if err != nil {
		return err
	}
	cons, err := makeConsumer(ctx, api, c, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("consumer %s: %w", c.consumer, err)
	}
	b := &bot{api: api, name: c.bot, log: log}
	cc, err := cons.Consume(b.handle)
	if err != nil {
		return err
	}
	log.Info("echobot running", "consumer", c.consumer)
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// bot answers the messages of its inbox.
type bot struct {
	api  *svcapi.Client
	name string
	log  *slog.Logger
}

// maxEcho keeps an answer within the protocol's 64 KiB body.
const maxEcho = 60 << 10

func (b *bot) handle(m jetstream.Msg) {
	ev, err := svcapi.DecodeMsg(m)
	if err != nil {
		b.log.Warn("skipping a record", "err", err)
		m.Ack()
		return
	}
	// The bot's inbox also holds receipts for its answers and copies of
	// its own sends: only messages to it get an answer.
	if ev.Kind != svcapi.KindMessage || ev.Message.From == b.name || ev.Message.To != b.name {
		m.Ack()
		return
	}
	text := ev.Message.Body
	for len(text) > maxEcho {
		_, size := utf8.DecodeLastRuneInString(text)
		text = text[:len(text)-size]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The cid is derived from the message id: if this instance dies after
	// sending and before acking, the instance that gets the message again
	// sends the same cid, and jetchat stores the answer once.
	_, err = b.api.Send(ctx, svcapi.SendRequest{From: b.name, CID: "echo-" + ev.Message.ID, To: ev.Message.From, Body: "echo: " + text})
	if err != nil {
		var e *svcapi.Error
		if errors.As(err, &e) && e.Code != "unavailable" && e.Code != "internal" {
			b.log.Warn("cannot answer", "msg_id", ev.Message.ID, "err", err)
			m.Ack() // a refusal will not change
			return
		}
		b.log.Warn("answer failed; retrying", "msg_id", ev.Message.ID, "err", err)
		m.NakWithDelay(time.Second)
		return
	}
	m.Ack()
}
