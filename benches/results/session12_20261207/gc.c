// Ideal group commit: N closed-loop appender threads, one sync in flight.
// A thread queues its record; if nobody is writing it leads: takes every
// queued record, one pwrite at the log's end, one fdatasync, publishes.
// Waiters sleep on their own condvar; the leader wakes exactly the ones it
// completed, then hands the writer to the first queued thread (if any).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define MAXT 64
int fd, sz, nt, K=1, full=0; double secs; off_t cur=0; off_t filesz;
pthread_mutex_t mu=PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t cv[MAXT];
int queued[MAXT]; int qn=0;           // queue of thread ids
int done[MAXT]; int writing=0; int lead[MAXT];
long total=0, groups=0; volatile int stop=0;
char *buf;
void* run(void*a){ long me=(long)a;
  while(!stop){
    pthread_mutex_lock(&mu);
    done[me]=0; lead[me]=0; queued[qn++]=me;
    if(writing>=K || (full && qn<nt)){ while(!done[me] && !lead[me] && !stop) pthread_cond_wait(&cv[me],&mu); if(stop && !done[me] && !lead[me]){pthread_mutex_unlock(&mu);break;} }
    while(!done[me]){
      // lead
      if(!lead[me]) writing++; lead[me]=0; int g=qn; int ids[MAXT]; memcpy(ids,queued,sizeof(int)*g); qn=0;
      off_t off=cur; cur+= (off_t)g*sz; if(cur+ (off_t)MAXT*sz>filesz){cur=0;off=0;cur=(off_t)g*sz;}
      pthread_mutex_unlock(&mu);
      pwrite(fd,buf,(size_t)g*sz,off); fdatasync(fd);
      pthread_mutex_lock(&mu);
      groups++; total+=g;
      for(int i=0;i<g;i++){ done[ids[i]]=1; if(ids[i]!=me) pthread_cond_signal(&cv[ids[i]]); }
      writing--;
      if(qn>0 && !lead[queued[0]] && (!full || qn==nt)){ lead[queued[0]]=1; pthread_cond_signal(&cv[queued[0]]); writing++; }
    }
    pthread_mutex_unlock(&mu);
  }
  return 0;}
int main(int argc,char**argv){ nt=atoi(argv[1]); sz=atoi(argv[2]); secs=atof(argv[3]); if(argc>4) K=atoi(argv[4]); if(argc>5) full=atoi(argv[5]);
  buf=malloc((size_t)MAXT*sz); memset(buf,'y',(size_t)MAXT*sz);
  fd=open("/work/dio.dat",O_RDWR); filesz=lseek(fd,0,SEEK_END);
  for(int i=0;i<MAXT;i++) pthread_cond_init(&cv[i],0);
  pthread_t th[MAXT]; double t0=now();
  for(long i=0;i<nt;i++) pthread_create(&th[i],0,run,(void*)i);
  usleep((useconds_t)(secs*1e6)); double t1=now(); long tot1=total, gr1=groups; pthread_mutex_lock(&mu); stop=1; for(int i=0;i<MAXT;i++) pthread_cond_signal(&cv[i]); pthread_mutex_unlock(&mu);
  for(int i=0;i<nt;i++) pthread_join(th[i],0);
  double t=t1-t0; total=tot1; groups=gr1; printf("gc K=%d full=%d threads %d sz %d: %.0f appends/s, %.2f per group, %.0f groups/s\n",K,full,nt,sz,total/t,(double)total/groups,groups/t);
}
