package redisconn_test

import (
	"context"
	"errors"
	"strings"
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
