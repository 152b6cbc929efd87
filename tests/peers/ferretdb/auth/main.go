//go:build davitauth

// Command davit-ferretdb-auth runs FerretDB v1.24.2 embedded, with its SQLite handler and
// authentication on (FerretDB's experimental "new auth": SCRAM, users in the backend), with
// one user created at first start. The embeddable ferretdb.Config has no fields for that, so
// tests/peers/ferretdb.py builds this file against a copy of the FerretDB module whose
// ferretdb.Config gains EnableNewAuth and Setup* fields (a `replace` directive in a generated
// go.mod); the build tag keeps it out of the plain peer's build.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite URI of the data directory (must end with /)")
	database := flag.String("setup-database", "admin", "database of the user created at first start")
	username := flag.String("setup-username", "", "user created at first start")
	passwordFile := flag.String("setup-password-file", "", "file holding that user's password")
	flag.Parse()

	password, err := os.ReadFile(*passwordFile)
	if err != nil || *username == "" {
		fmt.Fprintln(os.Stderr, "davit-ferretdb-auth: -setup-username and a readable -setup-password-file are required")
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Logger:        logger,
		Handler:       "sqlite",
		SQLiteURL:     *sqliteURL,
		EnableNewAuth: true,
		SetupDatabase: *database,
		SetupUsername: *username,
		SetupPassword: string(password),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "davit-ferretdb-auth:", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	logger.Info("davit-ferretdb-auth listening", "addr", *listen, "sqlite", *sqliteURL, "user", *username)
	if err := f.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "davit-ferretdb-auth:", err)
		os.Exit(1)
	}
}
