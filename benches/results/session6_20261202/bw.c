#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){ size_t sz=atol(argv[1]); double secs=atof(argv[2]);
  int fd=open("/work/dio.dat",O_RDWR); size_t fsz=256<<20;
  char*b=malloc(sz); for(size_t i=0;i<sz;i++) b[i]=rand();
  double t0=now(); size_t off=0, tot=0; long n=0;
  while(now()-t0<secs){ if(off+sz>fsz) off=0; pwrite(fd,b,sz,off); fdatasync(fd); off+=sz; tot+=sz; n++; }
  double t=now()-t0; printf("chunk %zu KiB: %.0f MB/s (%.0f syncs/s)\n", sz>>10, tot/t/1e6, n/t);
}
