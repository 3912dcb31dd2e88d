// A small stand-in of a Go service: a worker goroutine saving a todo panics.
package main

import (
	"errors"
	"fmt"
	"sync"
)

type Todo struct {
	ID    int
	Title string
}

type Store struct {
	mu    sync.Mutex
	todos map[int]*Todo
}

func (s *Store) Save(t *Todo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("save todo %d: %w", t.ID, errors.New("dial tcp 10.0.0.5:5432: connect: connection refused"))
}

func handle(s *Store, id int, title string) {
	if err := s.Save(&Todo{ID: id, Title: title}); err != nil {
		panic(err)
	}
}

func main() {
	store := &Store{todos: map[int]*Todo{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		handle(store, 42, "buy milk")
	}()
	wg.Wait()
}
