package com.example.todo;

import java.io.IOException;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.io.UncheckedIOException;
import java.net.ConnectException;
import java.sql.SQLException;
import java.util.List;

/** A small stand-in of the tutorial's todo-list service: saving a todo fails all the way down. */
public class TodoApp {
    static class Connection implements AutoCloseable {
        void execute(String sql) throws SQLException {
            try {
                connect("db.internal", 5432);
            } catch (ConnectException e) {
                throw new SQLException("connection to db.internal:5432 refused", "08001", e);
            }
        }

        private void connect(String host, int port) throws ConnectException {
            throw new ConnectException("Connection refused");
        }

        @Override
        public void close() {
            throw new UncheckedIOException("connection pool: close failed", new IOException("Broken pipe"));
        }
    }

    static class TodoRepository {
        void insert(String title) throws SQLException {
            try (Connection connection = new Connection()) {
                connection.execute("INSERT INTO todo(title) VALUES ('" + title + "')");
            }
        }
    }

    static class TodoService {
        private final TodoRepository repository = new TodoRepository();

        void save(String title) {
            try {
                repository.insert(title);
            } catch (SQLException e) {
                throw new IllegalStateException("could not save todo '" + title + "'", e);
            }
        }
    }

    public static class TodoController {
        private final TodoService service = new TodoService();

        public void post(List<String> titles) {
            titles.stream().map(String::strip).forEach(service::save);
        }
    }

    /** Calls the handler by reflection, on a worker thread, as a web framework does. */
    public static void main(String[] args) throws Exception {
        Method handler = TodoController.class.getMethod("post", List.class);
        Thread worker = new Thread(() -> {
            try {
                handler.invoke(new TodoController(), List.of(" buy milk "));
            } catch (InvocationTargetException e) {
                throw (RuntimeException) e.getCause();
            } catch (IllegalAccessException e) {
                throw new AssertionError(e);
            }
        }, "http-nio-8080-exec-1");
        worker.start();
        worker.join();
    }
}
