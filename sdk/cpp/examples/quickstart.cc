#include <future>
#include <iostream>

#include "pgbus/publisher.h"
#include "pgbus/receiver.h"

int main() {
  auto client = pgbus::Client::Connect();  // $PGBUS_SERVER (localhost:50051), $PGBUS_API_KEY
  (void)client->CreateTopic("greetings");  // ALREADY_EXISTS the second time
  (void)client->CreateSubscription("printer", "greetings");
  pgbus::Publisher publisher(client.get(), "greetings");
  pgbus::v1::PublishMessage hello;
  hello.set_payload("hello");
  std::cout << "published " << publisher.Publish(hello).get().value() << "\n";
  std::promise<void> done;
  pgbus::Receiver receiver(client.get(), "printer", [&done](pgbus::Received m) {
    std::cout << "received " << m.Data().value() << "\n";
    if (m.Ack().ok()) done.set_value();
  });
  done.get_future().wait();
}
