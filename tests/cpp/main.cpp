// Catch2 v2 entry point for the torch-free kernel tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
