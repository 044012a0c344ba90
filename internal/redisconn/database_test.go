package redisconn_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certmail/certmail/internal/redisconn"
	"github.com/certmail/certmail/internal/redistest"
)

// A REDIS_URL naming a database the server does not have (Redis answers
// "ERR DB index is out of range" to every connection) is a setting no wait
// mends: CheckDatabase and Wait return a *DatabaseError naming REDIS_URL
// and the database, Wait as soon as Redis answers, after waiting for a
// Redis that was down as it waits for any; the last database is accepted,
// and a Redis that is down is no DatabaseError.
func TestDatabaseTheServerLacks(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--databases", "4"}})
	open := func(db string) *redisconn.Conn {
		conn, err := redisconn.Open(strings.TrimSuffix(srv.URL(), "/0") + "/" + db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Client.Close() })
		return conn
	}
	ctx := context.Background()
	if err := open("3").CheckDatabase(ctx); err != nil {
		t.Errorf("database 3 of 4: %v", err)
	}
	missing := open("4")
	checkDatabaseError(t, "CheckDatabase", missing.CheckDatabase(ctx), srv.Addr())

	srv.Stop()
	if err := missing.CheckDatabase(ctx); err != nil {
		t.Errorf("Redis down: CheckDatabase says %v, want nil (down is waited for)", err)
	}
	core, logs := observer.New(zap.WarnLevel)
	relaunched := make(chan struct{})
	go func() {
		defer close(relaunched)
		for logs.FilterMessage("waiting for Redis").Len() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		srv.Relaunch()
	}()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := missing.Wait(wctx, zap.New(core))
	<-relaunched
	checkDatabaseError(t, "Wait", err, srv.Addr())
}

func checkDatabaseError(t *testing.T, call string, err error, addr string) {
	t.Helper()
	var dbErr *redisconn.DatabaseError
	if !errors.As(err, &dbErr) {
		t.Fatalf("%s on database 4 of 4: %v, want a *redisconn.DatabaseError", call, err)
	}
	want := "REDIS_URL redis://" + addr + "/4: Redis has no database 4 "
	if dbErr.DB != 4 || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "DB index is out of range") {
		t.Errorf("%s: %q (database %d), want it to start %q and quote Redis's answer", call, err, dbErr.DB, want)
	}
}

// CheckDatabase tries once: a Redis that does not answer costs one
// connection, not go-redis's dial and command retries (about a second
// when it is down, which every command that opens Redis would pay).
func TestCheckDatabaseTriesOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close() // no answer: as a Redis that restarts
		}
	}()
	conn, err := redisconn.Open("redis://" + ln.Addr().String() + "/3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Client.Close() })
	if err := conn.CheckDatabase(context.Background()); err != nil {
		t.Errorf("CheckDatabase against a server that closes every connection: %v, want nil", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("CheckDatabase opened %d connections, want 1", n)
	}
}
