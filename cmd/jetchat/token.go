package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jetchat/jetchat/internal/auth"
)

// token prints an HS256 access token signed with serve's key.
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var k keyFlags
	k.register(fs)
	user := fs.String("user", "", "user id (required)")
	device := fs.String("device", auth.DefaultDevice, "device id")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if *user == "" {
		return usageError{"--user is required"}
	}
	secret, err := k.secretBytes(k.publicKeys == "")
	if err != nil {
		return err
	}
	if secret == nil {
		return errors.New("token mints HS256 tokens but no secret is configured (--jwt-secret) and none was generated in the data folder")
	}
	tok, err := auth.Mint(secret, *user, *device, *ttl, time.Now())
	if err != nil {
		return usageError{err.Error()}
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
