// mailgated: see daemon/app.hpp for the commands.
#include "daemon/app.hpp"

int main(int argc, char** argv) { return mailgate::mailgated_main(argc, argv); }
