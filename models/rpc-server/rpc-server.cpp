// rpc-server: serves this machine's ggml devices to llama.cpp RPC clients (mood --rpc), built
// by models/build-rpc-server.sh from the llama.cpp sources in vendor/, so that it speaks the
// protocol version of the mood it serves.
//
// It exposes the accelerators ggml finds (CUDA, Metal, Vulkan… where built in), or the CPU
// when there is none, and serves one client at a time until it is stopped. The protocol has no
// authentication or encryption: listen on loopback (the default) or a private interface, or
// reach it through a tunnel.

#include "ggml-backend.h"
#include "ggml-rpc.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

static void usage(const char * argv0) {
    std::printf(
        "usage: %s [--host ADDRESS] [--port PORT] [--threads N] [--cache DIR]\n"
        "\n"
        "Serves this machine's ggml devices to llama.cpp RPC clients (mood --rpc HOST:PORT).\n"
        "\n"
        "  --host ADDRESS  IPv4 address to listen on (default 127.0.0.1; the protocol has no\n"
        "                  authentication: use a private interface or a tunnel)\n"
        "  --port PORT     port to listen on (default 50052)\n"
        "  --threads N     CPU threads for the CPU device (default: the cores)\n"
        "  --cache DIR     keep received weights in DIR, so that a client loading the same\n"
        "                  model again sends only their hashes\n",
        argv0);
}

static bool is_loopback(const std::string & host) {
    return host.rfind("127.", 0) == 0 || host == "localhost";
}

static bool is_private(const std::string & host) {
    unsigned a = 0, b = 0;
    if (std::sscanf(host.c_str(), "%u.%u", &a, &b) != 2) {
        return false;
    }
    return a == 10 || (a == 172 && b >= 16 && b < 32) || (a == 192 && b == 168) ||
           (a == 169 && b == 254) || (a == 100 && b >= 64 && b < 128);
}

int main(int argc, char ** argv) {
    std::string host = "127.0.0.1";
    int port = 50052;
    unsigned cores = std::thread::hardware_concurrency();
    int threads = cores > 0 ? (int) cores : 4;
    std::string cache;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        auto value = [&](const char * name) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "rpc-server: %s needs a value\n", name);
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--host" || arg == "-H") {
            host = value("--host");
        } else if (arg == "--port" || arg == "-p") {
            std::string v = value("--port");
            char * end = nullptr;
            long p = std::strtol(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || p < 1 || p > 65535) {
                std::fprintf(stderr, "rpc-server: --port must be from 1 to 65535, got '%s'\n", v.c_str());
                return 2;
            }
            port = (int) p;
        } else if (arg == "--threads" || arg == "-t") {
            std::string v = value("--threads");
            char * end = nullptr;
            long t = std::strtol(v.c_str(), &end, 10);
            if (end == v.c_str() || *end != '\0' || t < 1 || t > 512) {
                std::fprintf(stderr, "rpc-server: --threads must be from 1 to 512, got '%s'\n", v.c_str());
                return 2;
            }
            threads = (int) t;
        } else if (arg == "--cache" || arg == "-c") {
            cache = value("--cache");
        } else if (arg == "--help" || arg == "-h") {
            usage(argv[0]);
            return 0;
        } else {
            std::fprintf(stderr, "rpc-server: unknown argument '%s' (see --help)\n", arg.c_str());
            return 2;
        }
    }
    if (!is_loopback(host)) {
        std::fprintf(stderr,
            "rpc-server: warning: listening on %s; the RPC protocol has no authentication or "
            "encryption: anyone who reaches this port can use this machine's devices%s\n",
            host.c_str(), is_private(host) ? "" : " (and this is not a private address)");
    }
#ifndef _WIN32
    // A client that goes away mid-answer is an error of that connection, not a reason to stop.
    std::signal(SIGPIPE, SIG_IGN);
#endif
    ggml_backend_load_all();
    std::vector<ggml_backend_dev_t> devices;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            devices.push_back(dev);
        }
    }
    if (devices.empty()) {
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (cpu == nullptr) {
            std::fprintf(stderr, "rpc-server: ggml found no device to serve\n");
            return 1;
        }
        devices.push_back(cpu);
    }
    std::string endpoint = host + ":" + std::to_string(port);
    std::fflush(stdout);
    // Serves until the process is stopped; returns only when the socket cannot be opened.
    ggml_backend_rpc_start_server(endpoint.c_str(), cache.empty() ? nullptr : cache.c_str(),
                                  (size_t) threads, devices.size(), devices.data());
    std::fprintf(stderr, "rpc-server: cannot serve on %s (address in use, or not an IPv4 address of this machine)\n",
                 endpoint.c_str());
    return 1;
}
